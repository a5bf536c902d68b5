// The activity's view of a running stage: phases, steps and counts with their rate, heartbeats on every change, and a
// progress.json that follows within about a second; `status` reads it back from the run folder without a server.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { StageProgress } from '../activities/stageProgress';
import { runStatus } from '../src/client/runs';
import { combineShards, fresher, progressFileOf, readProgressFile } from '../src/progressFile';
import { withProgressFiles } from '../src/client/liveProgress';
import { liveText, statusLines } from '../src/progressView';
import { writeJsonAtomic } from '../src/runStore';
import type { StageHeartbeat } from '../workflows/types';
import { tmpDir } from './helpers';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stage progress', () => {
  it('rate from the count\'s first line (loading left out), a step resets the count and ends with the next count, every change a heartbeat', async () => {
    let now = 1_000_000;
    const beats: StageHeartbeat[] = [];
    const p = new StageProgress({ stage: 'sample', iteration: 1, attempt: 2, startedAtMs: now, heartbeat: (b) => beats.push(b), now: () => now });
    expect(beats[0]).toMatchObject({ phase: 'hashing inputs', attempt: 2 });
    now += 1_000;
    p.phase('running');
    now += 500;
    p.event({ type: 'phase', name: 'loading the policy model' });
    now += 60_000; // a minute of loading must not drag the rate down
    p.event({ type: 'alive' });
    expect(beats).toHaveLength(3); // alive changes nothing shown
    expect(liveText(p.current, now)).toBe('loading the policy model… (1m00s)');
    p.event({ type: 'progress', done: 0, total: 100, unit: 'responses' });
    expect(liveText(p.current, now)).toBe('0/100 responses (0%)'); // no speed from one line
    now += 10_000;
    p.event({ type: 'progress', done: 20, total: 100, unit: 'responses' });
    expect(p.current.rate).toBeCloseTo(2);
    expect(liveText(p.current, now)).toBe('20/100 responses (20%) 2.00 responses/s ETA 40s');
    // The ETA counts down between lines; a stage quiet for over a minute says so.
    expect(liveText(p.current, now + 70_000)).toBe('20/100 responses (20%) 2.00 responses/s ETA 0s (no line for 1m10s)');
    p.event({ type: 'phase', name: 'loading the judge' });
    expect([p.current.done, p.current.total, p.current.rate, p.current.step]).toEqual([0, 0, undefined, 'loading the judge']);
    expect(liveText(p.current, now + 3_000)).toBe('loading the judge… (3s)');
    p.phase('verifying');
    expect(p.current.step).toBeUndefined();
    await p.close();
  });

  it('progress.json: written at once on a phase change, then at most about once a second, the last state always', async () => {
    const dir = await tmpDir();
    const file = path.join(dir, 'iter-1', 'sample', 'progress.json');
    const p = new StageProgress({ stage: 'sample', iteration: 1, attempt: 1, startedAtMs: Date.now(), heartbeat: () => undefined, file, fileEveryMs: 300 });
    p.phase('running');
    await sleep(50);
    expect((await readProgressFile(file))?.phase).toBe('running');
    for (let i = 1; i <= 5; i++) p.event({ type: 'progress', done: i, total: 5, unit: 'rows' });
    await sleep(50);
    expect((await readProgressFile(file))?.done).toBe(0); // throttled
    await sleep(400);
    expect((await readProgressFile(file))?.done).toBe(5);
    p.event({ type: 'progress', done: 4, total: 9, unit: 'rows' });
    await p.close();
    expect((await readProgressFile(file))?.total).toBe(9);
  });

  it('status reads the running stage\'s progress.json from the run folder (no server), a past attempt\'s file is ignored', async () => {
    const runsDir = await tmpDir();
    const runDir = path.join(runsDir, 'r1');
    await mkdir(runDir, { recursive: true });
    const startedAt = Date.now() - 5_000;
    await writeJsonAtomic(path.join(runDir, 'run.json'), {
      runId: 'r1', status: 'running', plan: { iterations: 1, stages: ['sample', 'score'] },
      stages: [{ iteration: 1, stage: 'sample', queue: 'gpu', status: 'running', startedAt: new Date(startedAt).toISOString() }],
    });
    const beat: StageHeartbeat = { stage: 'sample', iteration: 1, done: 7, total: 10, unit: 'responses', startedAtMs: startedAt + 100, updatedAtMs: Date.now(), phase: 'running', rate: 1.5 };
    await writeJsonAtomic(progressFileOf(runDir, 1, 'sample'), beat);
    const st = await runStatus(undefined, runsDir, 'r1');
    expect(statusLines(st)[1]).toMatch(/^ {2}iter 1 {2}sample {3}7\/10 responses \(70%\) 1\.50 responses\/s ETA 2s$/);
    await writeJsonAtomic(progressFileOf(runDir, 1, 'sample'), { ...beat, startedAtMs: startedAt - 3_600_000 });
    expect((await runStatus(undefined, runsDir, 'r1')).live).toEqual([]);
    // With a heartbeat too, the fresher of the two wins.
    const old = { ...beat, done: 2, updatedAtMs: beat.updatedAtMs - 20_000 };
    expect(fresher(old, beat)).toBe(beat);
    expect(fresher(beat, old)).toBe(beat);
  });

  it('a sharded stage: each shard keeps its own progress.json; status sums them into one line, the merge stands alone', async () => {
    const runsDir = await tmpDir();
    const runDir = path.join(runsDir, 'r2');
    const startedAt = Date.now() - 5_000;
    await writeJsonAtomic(path.join(runDir, 'run.json'), {
      runId: 'r2', status: 'running', plan: { iterations: 1, stages: ['sample'] },
      stages: [{ iteration: 1, stage: 'sample', queue: 'gpu', status: 'running', startedAt: new Date(startedAt).toISOString() }],
    });
    const now = Date.now();
    const shard = (index: number, h: Partial<StageHeartbeat>): StageHeartbeat =>
      ({ stage: 'sample', iteration: 1, attempt: 1, shard: { index, count: 3 }, done: 0, total: 0, unit: '', startedAtMs: startedAt + 100, updatedAtMs: now - 1_000, phase: 'running', ...h });
    const files = [shard(0, { done: 10, total: 40, unit: 'responses', rate: 2 }), shard(1, { done: 6, total: 40, unit: 'responses', rate: 1 }), shard(2, { step: 'loading the policy model', stepStartedAtMs: now - 2_000 })];
    for (const b of files) await writeJsonAtomic(progressFileOf(runDir, 1, 'sample', b.shard), b);
    expect(progressFileOf(runDir, 1, 'sample', { index: 1, count: 3 })).toBe(path.join(runDir, 'iter-1', 'sample', 'shard-0001-of-0003', 'progress.json'));
    const st = { ...(await runStatus(undefined, runsDir, 'r2')) };
    expect(st.live).toHaveLength(1);
    expect(statusLines(st)[1]).toMatch(/sample {3}16\/80 responses \(20%\) 3\.00 responses\/s ETA 2\d?s \(3 shards\)$/);
    // A fresher heartbeat of shard 1 (from another host) wins over its file.
    const withBeat = await withHeartbeat(runsDir, 'r2', shard(1, { done: 30, total: 40, unit: 'responses', rate: 1, updatedAtMs: now }));
    expect(withBeat.live[0]?.done).toBe(40);
    // The merge, started after the shards' last news, is the stage's line on its own.
    await writeJsonAtomic(progressFileOf(runDir, 1, 'sample'), { stage: 'sample', iteration: 1, attempt: 1, done: 0, total: 0, unit: '', startedAtMs: now, updatedAtMs: now, phase: 'verifying', phaseStartedAtMs: now });
    expect(statusLines(await runStatus(undefined, runsDir, 'r2'))[1]).toMatch(/sample {3}verifying… \(0s\)$/);
    expect(combineShards([])).toBeUndefined();
  });
});

async function withHeartbeat(runsDir: string, runId: string, beat: StageHeartbeat) {
  const st = await runStatus(undefined, runsDir, runId);
  st.live = [beat];
  return withProgressFiles(st, path.join(runsDir, runId));
}
