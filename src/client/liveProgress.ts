// Live progress for `status` and the progress view: each running stage's progress.json from the run folder (fresh
// within about a second; needs the run folder, as local and shared-filesystem clients have it), merged with the
// heartbeat details Temporal holds (throttled by the SDK, but visible to any client). The fresher of the two wins.
import type { StageHeartbeat } from '../../workflows/types';
import { fresher, progressFileOf, readProgressFile } from '../progressFile';
import type { RunStatus } from './runs';

/** A progress file may be older than its stage's start only by clock skew between hosts; older is a past attempt's. */
const CLOCK_SLACK_MS = 30_000;

export async function withProgressFiles(st: RunStatus, runDir: string): Promise<RunStatus> {
  const running = st.record.stages.filter((s) => s.status === 'running');
  for (const s of running) {
    const file = await readProgressFile(progressFileOf(runDir, s.iteration, s.stage));
    const since = s.startedAt ? Date.parse(s.startedAt) - CLOCK_SLACK_MS : 0;
    if (!file || file.iteration !== s.iteration || file.stage !== s.stage || file.startedAtMs < since) continue;
    const at = st.live.findIndex((h) => h.iteration === s.iteration && h.stage === s.stage);
    const best = fresher(at >= 0 ? st.live[at] : undefined, file) as StageHeartbeat;
    if (at >= 0) st.live[at] = best;
    else st.live.push(best);
  }
  return st;
}
