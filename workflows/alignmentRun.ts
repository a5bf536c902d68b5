// The alignment run: iterations × stages, each stage an activity on its queue. Deterministic: all I/O is in activities.
// One execution runs one iteration, then continues-as-new carrying the plan and where to go on (RunOptions.from): new
// workflow code takes effect at the next iteration boundary and history stays bounded. Any change to the sequence of
// commands goes behind patched() (docs/architecture.md, Versioning); test/replay.test.ts replays recorded histories.
import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  condition,
  ContinueAsNew,
  isCancellation,
  makeContinueAsNewFunc,
  patched,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities, ShardActivities, StageActivities } from '../activities/types';
import {
  ITERATION_ATTR,
  MAX_ITERATIONS,
  pauseUpdate,
  progressQuery,
  setIterationsUpdate,
  skipStageUpdate,
  STAGE_ATTR,
  stopAfterIterationUpdate,
  unpauseUpdate,
} from './messages';
import { CONTROL_ACTIVITY_OPTIONS, stageActivityOptions } from './activityOptions';
import { gangMachines, runGang } from './gang';
import { allOrCancelRest } from './together';
import { iterationStatuses, mergeQueue, nextPolicy, shardSetting, skipProblem, stageInputs } from './plan';
import type { InputRef, RunControl, RunOptions, RunPlan, RunProgress, RunResumePoint, ShardSetting, StageName, StageRequest, StageResult, StageStatus } from './types';

/** Patch ids: one per change to the command sequence. Histories recorded before a patch replay its old branch. */
export const PATCHES = {
  /** v1: continue-as-new at iteration boundaries and when Temporal suggests it (runs started earlier loop in one execution). */
  continueAsNew: 'ratioloop-continue-as-new-v1',
  /** v1: a run whose cancellation was requested ends cancelled even when the stage failed otherwise (its worker was
   * dead: the heartbeat timeout, not a cancel, ended the activity). Only that case runs patched(). */
  cancelRequested: 'ratioloop-cancel-requested-v1',
  /** v3: sample/score with `shards` other than 1 run as K shard activities and a merge. Only such stages run patched(),
   * so unsharded runs keep their command sequence. (evaluate joined later under the same patch: configs before it
   * could not shard evaluate, so no history has an evaluate that this changes.) */
  shardedStages: 'ratioloop-sharded-stages-v3',
  /** v1: train with launch.num_machines > 1 runs as a gang (workflows/gang.ts): claims, one rank per machine. Only
   * such stages run patched(), so one-machine training keeps its command sequence. */
  gangTraining: 'ratioloop-gang-training-v1',
} as const;

function stageActivities(plan: RunPlan, stage: StageName): StageActivities {
  return proxyActivities<StageActivities>(stageActivityOptions(plan, stage));
}

/**
 * A sharded stage: K shard activities on the stage's queue at once (each resumes alone from its own folder; a lost
 * worker costs its shard's unfinished part), then the merge (plan.ts mergeQueue: evaluate's judges on its own queue). `auto` asks the control queue for K
 * first; K = 1 runs the stage as one activity. The first shard to fail for good cancels the others, which are waited
 * for (their process groups killed) before the failure goes on.
 */
async function runSharded(plan: RunPlan, control: ControlActivities, req: StageRequest, setting: ShardSetting, status: StageStatus): Promise<StageResult> {
  const count = setting === 'auto' ? (await control.planShards({ stage: req.stage, inputs: req.inputs, params: req.params, queue: plan.queues.gpu })).count : setting;
  if (count <= 1) return stageActivities(plan, req.stage).runStage(req);
  status.note = `${count} shards`;
  const started = Date.now();
  const shardRun = stageActivities(plan, req.stage);
  const shards = await allOrCancelRest(() => Array.from({ length: count }, (_, index) => shardRun.runStage({ ...req, shard: { index, count } })));
  const merge = proxyActivities<ShardActivities>({ ...stageActivityOptions(plan, req.stage), taskQueue: mergeQueue(plan, req.stage) });
  const merged = await merge.mergeShards({ ...req, shards });
  return { ...merged, skipped: merged.skipped && shards.every((r) => r.skipped), durationMs: Date.now() - started };
}

function errorMessage(err: unknown): string {
  // ActivityFailure wraps the activity's ApplicationFailure: report the innermost message.
  let e: unknown = err;
  while (e && typeof e === 'object' && 'cause' in e && (e as { cause?: unknown }).cause) e = (e).cause;
  return e instanceof Error ? e.message : String(e);
}

export async function alignmentRun(plan: RunPlan, opts: RunOptions = {}): Promise<RunProgress> {
  const from: RunResumePoint = opts.from ?? { iteration: 1, ...(plan.staticInputs.policy ? { policy: plan.staticInputs.policy } : {}) };
  const useAttributes = opts.searchAttributes !== false;
  const ctl: RunControl = { paused: opts.control?.paused ?? false, iterations: plan.iterations, skip: [...(opts.control?.skip ?? [])] };
  const state: RunProgress = { runId: plan.runId, status: 'running', iteration: from.iteration, iterations: plan.iterations, stages: iterationStatuses(plan, from.iteration, from.done), control: ctl };
  setHandler(progressQuery, () => state);

  const control = proxyActivities<ControlActivities>(CONTROL_ACTIVITY_OPTIONS(plan.queues.control));
  const record = (s: StageStatus): Promise<void> => control.recordStage({ runDir: plan.runDir, status: s });
  const recordRun = (): Promise<{ buildId?: string } | void> =>
    control.recordRun({ runDir: plan.runDir, workflowRunId: workflowInfo().runId, status: state.status, error: state.error, iteration: state.iteration });
  const continueAsNew = makeContinueAsNewFunc<typeof alignmentRun>(useAttributes ? { typedSearchAttributes: workflowInfo().typedSearchAttributes } : {});
  /** Continue-as-new to `next` if this code may (a history from before the patch keeps looping in one execution). */
  const maybeContinue = async (next: RunResumePoint): Promise<void> => {
    if (!patched(PATCHES.continueAsNew)) return;
    // Control handlers may still be recording; the new execution gets the control state they set.
    if (!allHandlersFinished()) await condition(allHandlersFinished);
    const skip = ctl.skip.filter((x) => Number(x.split(':')[0]) >= next.iteration);
    await continueAsNew({ ...plan, iterations: ctl.iterations }, { ...opts, from: next, control: { paused: ctl.paused, skip } });
  };

  // Control: validated when sent (a rejected request changes nothing), applied at the next stage boundary.
  const running = (): void => {
    if (state.status !== 'running') throw new Error(`run ${plan.runId} is ${state.status}`);
  };
  const applied = async (): Promise<RunControl> => {
    state.iterations = ctl.iterations;
    await control.recordControl({ runDir: plan.runDir, control: ctl });
    return ctl;
  };
  const checkIterations = (n: number): void => {
    running();
    if (!Number.isInteger(n) || n < 1 || n > MAX_ITERATIONS) throw new Error(`iterations must be an integer from 1 to ${MAX_ITERATIONS}`);
    if (n < state.iteration) throw new Error(`iteration ${state.iteration} is already running: iterations must be at least ${state.iteration}`);
  };
  setHandler(pauseUpdate, async () => ((ctl.paused = true), applied()), { validator: running });
  setHandler(unpauseUpdate, async () => ((ctl.paused = false), applied()), { validator: running });
  setHandler(setIterationsUpdate, async (n) => ((ctl.iterations = n), applied()), { validator: checkIterations });
  setHandler(stopAfterIterationUpdate, async () => ((ctl.iterations = state.iteration), applied()), { validator: running });
  setHandler(
    skipStageUpdate,
    async ({ iteration, stage }) => {
      if (!ctl.skip.includes(`${iteration}:${stage}`)) ctl.skip.push(`${iteration}:${stage}`);
      return applied();
    },
    {
      validator: ({ iteration, stage }: { iteration: number; stage: StageName }) => {
        running();
        if (!Number.isInteger(iteration) || iteration < 1 || iteration > ctl.iterations) throw new Error(`iteration must be from 1 to ${ctl.iterations}`);
        const started = state.stages.filter((s) => s.status !== 'pending').map((s) => s.stage);
        const problem = skipProblem(plan, iteration, stage, { iteration: state.iteration, started }, ctl.skip);
        if (problem) throw new Error(problem);
      },
    },
  );

  // The control worker answers with its bundle's build id; histories recorded before that answer undefined.
  const buildId = (await recordRun())?.buildId;
  let policy: InputRef | undefined = from.policy;
  let current: StageStatus | undefined;
  try {
    for (let k = from.iteration; k <= ctl.iterations; k++) {
      if (k !== state.iteration) {
        state.iteration = k;
        state.stages = iterationStatuses(plan, k);
      }
      if (useAttributes) upsertSearchAttributes([{ key: ITERATION_ATTR, value: k }]);
      const done: Partial<Record<StageName, StageResult>> = k === from.iteration ? { ...from.done } : {};
      const handled = (s: StageName): boolean => Boolean(done[s]) || ctl.skip.includes(`${k}:${s}`);
      for (const stage of plan.stages) {
        if (done[stage]) continue;
        const status = state.stages.find((s) => s.stage === stage);
        if (!status) throw ApplicationFailure.nonRetryable(`no status slot for ${stage} in iteration ${k}`);
        if (ctl.paused) {
          state.waiting = true;
          await condition(() => !ctl.paused);
          state.waiting = false;
        }
        if (ctl.skip.includes(`${k}:${stage}`)) {
          status.status = 'skipped';
          status.note = 'skipped on request';
          await record(status);
          continue;
        }
        current = status;
        if (useAttributes) upsertSearchAttributes([{ key: STAGE_ATTR, value: stage }]);
        status.status = 'running';
        status.startedAt = new Date(Date.now()).toISOString();
        await record(status);
        const req: StageRequest = {
          runId: plan.runId,
          runDir: plan.runDir,
          iteration: k,
          stage,
          seed: plan.seed,
          params: plan.stagePlans[stage].params,
          inputs: stageInputs(plan, stage, done, policy),
          ...(buildId ? { workflowBuildId: buildId } : {}),
          ...(plan.stagePlans[stage].options.stallTimeoutMs ? { stallTimeoutMs: plan.stagePlans[stage].options.stallTimeoutMs } : {}),
          ...(plan.stagePlans[stage].options.maxFailures ? { maxFailures: plan.stagePlans[stage].options.maxFailures } : {}),
        };
        const sharding = shardSetting(plan, stage);
        const result = sharding !== undefined && patched(PATCHES.shardedStages)
          ? await runSharded(plan, control, req, sharding, status)
          : stage === 'train' && gangMachines(req.params) > 1 && patched(PATCHES.gangTraining)
            ? await runGang(plan, req, status)
            : await stageActivities(plan, stage).runStage(req);
        done[stage] = result;
        status.status = result.skipped ? 'skipped' : 'done';
        status.finishedAt = new Date(Date.now()).toISOString();
        status.durationMs = result.durationMs;
        status.metrics = result.metrics;
        current = undefined;
        await record(status);
        const more = plan.stages.some((s) => !handled(s));
        if (more && workflowInfo().continueAsNewSuggested) await maybeContinue({ iteration: k, ...(policy ? { policy } : {}), done });
      }
      policy = nextPolicy(policy, done);
      if (k < ctl.iterations) await maybeContinue({ iteration: k + 1, ...(policy ? { policy } : {}) });
    }
    state.status = 'completed';
    await recordRun();
    if (!allHandlersFinished()) await condition(allHandlersFinished);
    return state;
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    // A cancel that reached a stage whose worker is dead ends that activity by heartbeat timeout, not as cancelled;
    // the request is still on the root scope. The patch marker is written only in that case.
    const cancelled = isCancellation(err) || (CancellationScope.current().consideredCancelled && patched(PATCHES.cancelRequested));
    state.status = cancelled ? 'cancelled' : 'failed';
    state.error = cancelled ? 'cancelled' : errorMessage(err);
    if (current) {
      current.status = cancelled ? 'cancelled' : 'failed';
      current.error = state.error;
      current.finishedAt = new Date(Date.now()).toISOString();
    }
    // Bookkeeping must reach the run store even when the workflow itself is being cancelled.
    await CancellationScope.nonCancellable(async () => {
      if (current) await record(current);
      await recordRun();
    });
    if (cancelled) throw isCancellation(err) ? err : new CancelledFailure(`cancelled (the running stage ended otherwise: ${errorMessage(err)})`);
    const where = current ? `iteration ${current.iteration} ${current.stage}: ` : '';
    throw ApplicationFailure.nonRetryable(`${where}${state.error}`, 'StageFailed');
  }
}
