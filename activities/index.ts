// Activities registered by workers: stage activities on the cpu/gpu queues, bookkeeping on the control queue.
export { createStageActivities, type StageDeps } from './stages';
export { createControlActivities } from './control';
export { createShardActivities } from './mergeShards';
export type { ControlActivities, ShardActivities, StageActivities } from './types';
