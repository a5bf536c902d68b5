// Bookkeeping activities on the control queue: keep run.json in step with the workflow.
import type { ControlActivities } from './types';
import { updateRun, upsertStage } from '../src/runStore';
import { planShards, type PollerCount } from './planShards';

export interface ControlDeps {
  /** Build id of the workflow bundle this worker runs (src/workflowBundle.ts). */
  buildId?: string;
  /** Workers polling a queue (DescribeTaskQueue on the worker's connection), for `shards: auto`. */
  pollers?: PollerCount;
}

export function createControlActivities(deps: ControlDeps = {}): ControlActivities {
  return {
    async recordStage({ runDir, status }) {
      await updateRun(runDir, (rec) => upsertStage(rec, status));
    },
    async recordControl({ runDir, control }) {
      await updateRun(runDir, (rec) => {
        rec.control = { ...control, updatedAt: new Date().toISOString() };
        rec.plan.iterations = control.iterations;
      });
    },
    async planShards(req) {
      return planShards(req, deps.pollers);
    },
    async recordRun({ runDir, workflowRunId, status, error, iteration }) {
      await updateRun(runDir, (rec) => {
        rec.status = status;
        if (error) rec.error = error;
        else delete rec.error;
        if (!rec.workflowRunIds.includes(workflowRunId)) rec.workflowRunIds.push(workflowRunId);
        // One entry per workflow execution (continue-as-new starts one per iteration): which code ran it.
        rec.executions ??= [];
        if (!rec.executions.some((x) => x.workflowRunId === workflowRunId)) {
          rec.executions.push({ workflowRunId, startedAt: new Date().toISOString(), ...(iteration ? { fromIteration: iteration } : {}), ...(deps.buildId ? { buildId: deps.buildId } : {}) });
        }
      });
      return deps.buildId ? { buildId: deps.buildId } : {};
    },
  };
}
