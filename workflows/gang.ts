// Multi-node training as a gang (docs/operations.md, "Multi-node training as a gang"): the pure planning step that turns
// the machines a gang has claimed into one rank request per machine. No I/O and no clock, so a workflow can call it and
// replay it. The rendezvous address goes into each rank's environment, never its params, so every rank and every retry
// of the gang has the same spec hash wherever it lands. runGang (below) is the workflow's side: claims, ranks, retries.
import { ActivityFailure, ApplicationFailure, CancellationScope, proxyActivities, sleep } from '@temporalio/workflow';
import { allOrCancelRest } from './together';
import type { GangActivities } from '../activities/gangClaim';
import type { StageActivities } from '../activities/types';
import { NON_RETRYABLE_STAGE_ERRORS, stageActivityOptions } from './activityOptions';
import type { RunPlan, StageRequest, StageResult, StageStatus } from './types';

/** What a claim activity reports for the machine it holds the slots of. */
export interface GangClaim {
  /** The machine's per-host task queue (src/queues.ts hostQueueName), where its rank activity must run. */
  taskQueue: string;
  host: string;
  /** An address the other machines reach this one at, and a port free on it, for rank 0's rendezvous. */
  address: string;
  port: number;
}

export interface GangRank {
  rank: number;
  taskQueue: string;
  env: Record<string, string>;
}

/** Machines a train stage's params ask for (train.launch.num_machines). */
export function gangMachines(params: Record<string, unknown>): number {
  const n = (params.launch as Record<string, unknown> | undefined)?.num_machines;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 1;
}

/**
 * One rank per claimed machine, rank 0 on the first claim (the first machine ready), every rank told rank 0's
 * address. A gang that cannot start returns its problem instead: the workflow releases the claims and claims again.
 */
export function planGang(machines: number, claims: readonly GangClaim[]): { ranks: GangRank[] } | { problem: string } {
  if (claims.length !== machines) return { problem: `the gang needs ${machines} machines and has ${claims.length}` };
  const seen = new Set<string>();
  for (const c of claims) {
    // Two ranks on one machine would fight over its GPUs and its rendezvous port.
    if (seen.has(c.taskQueue)) return { problem: `host ${c.host} was claimed twice (${c.taskQueue})` };
    seen.add(c.taskQueue);
    if (!Number.isInteger(c.port) || c.port < 1 || c.port > 65535) return { problem: `host ${c.host} offered port ${c.port}` };
  }
  const main = claims[0]!;
  return {
    ranks: claims.map((c, rank) => ({
      rank,
      taskQueue: c.taskQueue,
      env: { RATIOLOOP_MACHINE_RANK: String(rank), RATIOLOOP_MAIN_PROCESS_IP: main.address, RATIOLOOP_MAIN_PROCESS_PORT: String(main.port) },
    })),
  };
}

// ---------------------------------------------------------------------------------------------------- the workflow side
// Everything below runs inside the workflow (deterministic: activities and timers only).

/** How long one claim holds its worker's task slot: long enough for the gang's other claims to reach other machines. */
export const CLAIM_HOLD_MS = 2_000;
/** Rounds of claims before a gang that keeps landing on the same machines gives up (too few machines poll). */
export const CLAIM_ROUNDS = 20;
/** Gang attempts when the stage's own attempts are uncapped (maximumAttempts 0). */
export const DEFAULT_GANG_ATTEMPTS = 5;
/** A rank nobody takes from its host queue this long after the claim (the machine died in between) fails the attempt. */
export const RANK_START_TIMEOUT = '2 minutes';

/** Claim `machines` distinct machines on `queue`: each round asks for the missing ones, a machine answering twice counts once. */
async function claimGang(queue: string, machines: number): Promise<GangClaim[]> {
  const claimer = proxyActivities<GangActivities>({ taskQueue: queue, startToCloseTimeout: '1 minute', retry: { initialInterval: '1s', maximumAttempts: 5 } });
  const kept: GangClaim[] = [];
  for (let round = 1; round <= CLAIM_ROUNDS; round++) {
    const more = await Promise.all(Array.from({ length: machines - kept.length }, () => claimer.claimMachine({ holdMs: CLAIM_HOLD_MS })));
    for (const c of more) if (!kept.some((k) => k.taskQueue === c.taskQueue)) kept.push(c);
    if (kept.length === machines) return kept;
    await sleep('1s');
  }
  throw ApplicationFailure.nonRetryable(
    `the gang needs ${machines} machines polling ${queue}; after ${CLAIM_ROUNDS} rounds of claims only ${kept.length} answered (${kept.map((c) => c.host).join(', ')})`,
    'GangIncomplete',
  );
}

/** A rank's failure the gang may retry: not bad input or a broken stage program, which no other machine fixes. */
function gangRetryable(err: unknown): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (cause instanceof ApplicationFailure) return !cause.nonRetryable && !(NON_RETRYABLE_STAGE_ERRORS as readonly string[]).includes(cause.type ?? '');
  return true; // timeouts (a dead worker, a rank nobody took), a cancel we caused
}

/**
 * A train stage on `num_machines` machines: unless its manifest proves it done already, claim them, run one rank activity on each machine's own queue in one
 * cancellation scope, rank 0's rendezvous in every rank's environment. The first rank to fail cancels the others
 * (their process groups killed) and the whole gang runs again, with new claims, from the last checkpoint in the shared
 * stage folder. Rank 0's result (its manifest) is the stage's.
 */
export async function runGang(plan: RunPlan, req: StageRequest, status: StageStatus): Promise<StageResult> {
  const machines = gangMachines(req.params);
  const o = plan.stagePlans[req.stage].options;
  const base = stageActivityOptions(plan, req.stage);
  const attempts = o.maximumAttempts > 0 ? o.maximumAttempts : DEFAULT_GANG_ATTEMPTS;
  const started = Date.now();
  // A finished stage (resume) is skipped without claiming: it must not need N machines to be told it is done.
  const probe = await proxyActivities<StageActivities>(base).runStage({ ...req, gang: { rank: 0, machines, attempt: 0, env: {}, probe: true } });
  if (probe.skipped) return probe;
  for (let attempt = 1; ; attempt++) {
    const claims = await claimGang(base.taskQueue!, machines);
    const gang = planGang(machines, claims);
    if ('problem' in gang) throw ApplicationFailure.nonRetryable(gang.problem, 'GangInvalid');
    status.note = `${machines} machines (gang attempt ${attempt}): ${claims.map((c) => c.host).join(', ')}`;
    try {
      const results = await allOrCancelRest(() =>
        gang.ranks.map((r) => {
          // Each rank runs once: a rank alone cannot rejoin a rendezvous the others have left, so the gang is what retries.
          const act = proxyActivities<StageActivities>({ ...base, taskQueue: r.taskQueue, scheduleToStartTimeout: RANK_START_TIMEOUT, retry: { ...base.retry, maximumAttempts: 1 } });
          // Ranks > 0 print no progress: rank 0's stall watchdog speaks for the gang.
          const { stallTimeoutMs, ...rest } = req;
          return act.runStage({ ...rest, ...(r.rank === 0 && stallTimeoutMs ? { stallTimeoutMs } : {}), gang: { rank: r.rank, machines, attempt, env: r.env } });
        }),
      );
      return { ...results[0]!, skipped: results.every((x) => x.skipped), durationMs: Date.now() - started };
    } catch (err) {
      // The run itself is being cancelled, the failure is final, or the attempts are spent: the stage fails with it.
      if (CancellationScope.current().consideredCancelled || !gangRetryable(err) || attempt >= attempts) throw err;
      await sleep(o.initialInterval);
    }
  }
}
