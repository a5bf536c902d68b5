// A gang's machine rank > 0 inside the stage activity (workflows/gang.ts): it shares rank 0's stage folder on the shared
// filesystem, so it takes no lease, sets nothing aside and writes no spec or manifest; it runs rank 0's spec.json once
// rank 0 has written it for this spec (so a changed spec's old checkpoints are set aside before any rank reads them).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ApplicationFailure, CancelledFailure } from '@temporalio/activity';
import type { StageRequest } from '../workflows/types';

/** True for ranks > 0 of a gang: they follow rank 0's folder. */
export const isFollower = (req: StageRequest): boolean => req.gang !== undefined && req.gang.rank > 0;

/** How an attempt's files are named: the gang's attempt for every rank, `.rank<r>` for ranks > 0 (one folder, N writers). */
export function attemptTag(req: StageRequest, temporalAttempt: number): { attempt: number; suffix: string } {
  if (!req.gang) return { attempt: temporalAttempt, suffix: '' };
  return { attempt: req.gang.attempt, suffix: req.gang.rank > 0 ? `.rank${req.gang.rank}` : '' };
}

/**
 * Wait until `<outputDir>/spec.json` is rank 0's for this spec hash; returns its path. Bounded: rank 0 may first wait
 * for the folder's lease (ttl + skew + 30 s), past that something is wrong and the gang is retried.
 */
export async function waitForMainSpec(outputDir: string, hash: string, o: { signal: AbortSignal; timeoutMs: number; pollMs?: number; onWait?: () => void }): Promise<string> {
  const specPath = path.join(outputDir, 'spec.json');
  const until = Date.now() + o.timeoutMs;
  let told = false;
  for (;;) {
    const written = await readFile(specPath, 'utf8').then((t) => (JSON.parse(t) as { specHash?: string }).specHash).catch(() => undefined);
    if (written === hash) return specPath;
    if (o.signal.aborted) throw new CancelledFailure('cancelled while waiting for machine rank 0 to write the spec');
    if (Date.now() > until) throw ApplicationFailure.retryable(`machine rank 0 did not write ${specPath} for this spec within ${Math.round(o.timeoutMs / 1000)} s`, 'GangRankZeroMissing');
    if (!told) o.onWait?.();
    told = true;
    await delay(o.pollMs ?? 500, undefined, { signal: o.signal }).catch(() => undefined);
  }
}
