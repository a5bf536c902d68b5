// Live progress for `status` and the progress view: each running stage's progress.json from the run folder (fresh
// within about a second; needs the run folder, as local and shared-filesystem clients have it), merged with the
// heartbeat details Temporal holds (throttled by the SDK, but visible to any client). The fresher of the two wins, per
// shard when the stage runs as shards (their files are in their own folders), and shards are summed into one line.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { StageHeartbeat } from '../../workflows/types';
import { combineShards, fresher, PROGRESS_FILE, progressFileOf, readProgressFile } from '../progressFile';
import { stageDirOf } from '../runStore';
import type { RunStatus } from './runs';

/** A progress file may be older than its stage's start only by clock skew between hosts; older is a past attempt's. */
const CLOCK_SLACK_MS = 30_000;

const shardKey = (b: StageHeartbeat): string => (b.shard ? `${b.shard.index}/${b.shard.count}` : '');

async function progressFiles(runDir: string, iteration: number, stage: StageHeartbeat['stage']): Promise<StageHeartbeat[]> {
  const dir = stageDirOf(runDir, iteration, stage);
  const shardDirs = (await readdir(dir).catch(() => [] as string[])).filter((n) => /^shard-\d+-of-\d+$/.test(n));
  const files = [progressFileOf(runDir, iteration, stage), ...shardDirs.map((d) => path.join(dir, d, PROGRESS_FILE))];
  const beats = await Promise.all(files.map(readProgressFile));
  return beats.filter((b): b is StageHeartbeat => b !== undefined);
}

export async function withProgressFiles(st: RunStatus, runDir: string): Promise<RunStatus> {
  for (const s of st.record.stages.filter((x) => x.status === 'running')) {
    const mine = (b: StageHeartbeat): boolean => b.iteration === s.iteration && b.stage === s.stage;
    const since = s.startedAt ? Date.parse(s.startedAt) - CLOCK_SLACK_MS : 0;
    const files = (await progressFiles(runDir, s.iteration, s.stage)).filter((b) => mine(b) && b.startedAtMs >= since);
    const beats = new Map<string, StageHeartbeat>();
    for (const b of [...st.live.filter(mine), ...files]) beats.set(shardKey(b), fresher(beats.get(shardKey(b)), b)!);
    const one = combineShards([...beats.values()]);
    st.live = st.live.filter((b) => !mine(b));
    if (one) st.live.push(one);
  }
  return st;
}
