// Temporal activity options of the run's workflow: how long a stage may take and how it is retried, and how the
// bookkeeping is retried. Retry policies are not commands: changing them here never breaks replay.
import { ActivityCancellationType, type ActivityOptions } from '@temporalio/workflow';
import type { RunPlan, StageName } from './types';

/** Failure types no retry can fix: the content is wrong, or the stage program has a bug (exit 0, bad manifest). */
export const NON_RETRYABLE_STAGE_ERRORS = ['BadInput', 'ManifestInvalid'] as const;

export function stageActivityOptions(plan: RunPlan, stage: StageName): ActivityOptions {
  const o = plan.stagePlans[stage].options;
  return {
    taskQueue: plan.queues[plan.stagePlans[stage].queue],
    startToCloseTimeout: o.startToCloseTimeout,
    heartbeatTimeout: o.heartbeatTimeout,
    // A resumable stage on preemptible machines: no attempt cap, the whole stage bounded in time instead.
    ...(o.scheduleToCloseTimeout ? { scheduleToCloseTimeout: o.scheduleToCloseTimeout } : {}),
    // Wait for the runner to kill the process group before the workflow moves on: no orphans.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      ...(o.maximumAttempts > 0 ? { maximumAttempts: o.maximumAttempts } : {}),
      initialInterval: o.initialInterval,
      backoffCoefficient: o.backoffCoefficient,
      ...(o.maximumInterval ? { maximumInterval: o.maximumInterval } : {}),
      nonRetryableErrorTypes: [...NON_RETRYABLE_STAGE_ERRORS],
    },
  };
}

/**
 * Bookkeeping (run.json) is retried until it succeeds: a run store that is down for an hour holds the run, it does
 * not fail it. No attempt cap, no overall bound; `status` shows the pending attempt's last failure, `cancel --force`
 * ends a run whose store never comes back.
 */
export const CONTROL_ACTIVITY_OPTIONS = (queue: string): ActivityOptions => ({
  taskQueue: queue,
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1 minute' },
});
