// Activity interfaces, shared as types by the workflow (which must not import activity code).
import type { RunControl, RunState, StageRequest, StageResult, StageStatus } from '../workflows/types';

export interface StageActivities {
  runStage(req: StageRequest): Promise<StageResult>;
}

export interface ControlActivities {
  recordStage(req: { runDir: string; status: StageStatus }): Promise<void>;
  /** Returns the build id of the control worker's workflow bundle. */
  /** Accepted control requests into run.json (`control`, and the iteration count in the recorded plan). */
  recordControl(req: { runDir: string; control: RunControl }): Promise<void>;
  recordRun(req: { runDir: string; workflowRunId: string; status: RunState; error?: string; iteration?: number }): Promise<{ buildId?: string }>;
}
