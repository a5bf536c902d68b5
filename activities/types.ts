// Activity interfaces, shared as types by the workflow (which must not import activity code).
import type { MergeRequest, RunControl, RunState, ShardPlanResult, StageRequest, StageResult, StageStatus } from '../workflows/types';

export interface StageActivities {
  runStage(req: StageRequest): Promise<StageResult>;
}

/** The merge of a sharded stage (cpu queue): the stage's one output and manifest from its shards'. */
export interface ShardActivities {
  mergeShards(req: MergeRequest): Promise<StageResult>;
}

export interface ControlActivities {
  recordStage(req: { runDir: string; status: StageStatus }): Promise<void>;
  /** Returns the build id of the control worker's workflow bundle. */
  /** Accepted control requests into run.json (`control`, and the iteration count in the recorded plan). */
  recordControl(req: { runDir: string; control: RunControl }): Promise<void>;
  recordRun(req: { runDir: string; workflowRunId: string; status: RunState; error?: string; iteration?: number }): Promise<{ buildId?: string }>;
  /** `shards: auto`: the shard count from the stage's prompts and the workers polling `queue` (activities/planShards.ts). */
  planShards(req: { stage: StageRequest['stage']; inputs: StageRequest['inputs']; params: StageRequest['params']; queue: string }): Promise<ShardPlanResult>;
}
