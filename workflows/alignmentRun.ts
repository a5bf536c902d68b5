// The alignment run: iterations × stages, each stage an activity on its queue. Deterministic: all I/O is in activities.
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities, StageActivities } from '../activities/types';
import { ITERATION_ATTR, progressQuery, STAGE_ATTR } from './messages';
import { initialStatuses, nextPolicy, stageInputs } from './plan';
import type { RunPlan, RunProgress, StageName, StageResult, StageStatus } from './types';

function stageActivities(plan: RunPlan, stage: StageName): StageActivities {
  const sp = plan.stagePlans[stage];
  return proxyActivities<StageActivities>({
    taskQueue: plan.queues[sp.queue],
    startToCloseTimeout: sp.options.startToCloseTimeout,
    heartbeatTimeout: sp.options.heartbeatTimeout,
    // Wait for the runner to kill the process group before the workflow moves on: no orphans.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      maximumAttempts: sp.options.maximumAttempts,
      initialInterval: sp.options.initialInterval,
      backoffCoefficient: sp.options.backoffCoefficient,
      nonRetryableErrorTypes: ['BadInput'],
    },
  });
}

function errorMessage(err: unknown): string {
  // ActivityFailure wraps the activity's ApplicationFailure: report the innermost message.
  let e: unknown = err;
  while (e && typeof e === 'object' && 'cause' in e && (e as { cause?: unknown }).cause) e = (e).cause;
  return e instanceof Error ? e.message : String(e);
}

export async function alignmentRun(plan: RunPlan): Promise<RunProgress> {
  const state: RunProgress = { runId: plan.runId, status: 'running', iteration: 1, iterations: plan.iterations, stages: initialStatuses(plan) };
  setHandler(progressQuery, () => state);

  const control = proxyActivities<ControlActivities>({
    taskQueue: plan.queues.control,
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 10 },
  });
  const record = (s: StageStatus): Promise<void> => control.recordStage({ runDir: plan.runDir, status: s });
  const recordRun = (): Promise<void> =>
    control.recordRun({ runDir: plan.runDir, workflowRunId: workflowInfo().runId, status: state.status, error: state.error });

  await recordRun();
  let policy = plan.staticInputs.policy;
  let current: StageStatus | undefined;
  try {
    for (let k = 1; k <= plan.iterations; k++) {
      state.iteration = k;
      upsertSearchAttributes([{ key: ITERATION_ATTR, value: k }]);
      const done: Partial<Record<StageName, StageResult>> = {};
      for (const stage of plan.stages) {
        const status = state.stages.find((s) => s.iteration === k && s.stage === stage);
        if (!status) throw ApplicationFailure.nonRetryable(`no status slot for ${stage} in iteration ${k}`);
        current = status;
        upsertSearchAttributes([{ key: STAGE_ATTR, value: stage }]);
        status.status = 'running';
        status.startedAt = new Date(Date.now()).toISOString();
        await record(status);
        const result = await stageActivities(plan, stage).runStage({
          runId: plan.runId,
          runDir: plan.runDir,
          iteration: k,
          stage,
          seed: plan.seed,
          params: plan.stagePlans[stage].params,
          inputs: stageInputs(plan, stage, done, policy),
        });
        done[stage] = result;
        status.status = result.skipped ? 'skipped' : 'done';
        status.finishedAt = new Date(Date.now()).toISOString();
        status.durationMs = result.durationMs;
        status.metrics = result.metrics;
        current = undefined;
        await record(status);
      }
      policy = nextPolicy(policy, done);
    }
    state.status = 'completed';
    await recordRun();
    return state;
  } catch (err) {
    const cancelled = isCancellation(err);
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
    if (cancelled) throw err;
    const where = current ? `iteration ${current.iteration} ${current.stage}: ` : '';
    throw ApplicationFailure.nonRetryable(`${where}${state.error}`, 'StageFailed');
  }
}
