// Bookkeeping activities on the control queue: keep run.json in step with the workflow.
import type { ControlActivities } from './types';
import { updateRun, upsertStage } from '../src/runStore';

export function createControlActivities(): ControlActivities {
  return {
    async recordStage({ runDir, status }) {
      await updateRun(runDir, (rec) => upsertStage(rec, status));
    },
    async recordRun({ runDir, workflowRunId, status, error }) {
      await updateRun(runDir, (rec) => {
        rec.status = status;
        if (error) rec.error = error;
        else delete rec.error;
        if (!rec.workflowRunIds.includes(workflowRunId)) rec.workflowRunIds.push(workflowRunId);
      });
    },
  };
}
