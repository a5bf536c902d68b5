// The merge activity of a sharded stage (cpu queue): the stage activity run under the stage's unsharded spec, with the
// shards' outputs listed for the program's merge mode. The merged manifest carries the same spec hash as an unsharded
// run's, so sharding is how a stage ran, never what it produced (a later unsharded resume finds it done).
import type { ShardActivities } from './types';
import { createStageActivities, type StageDeps } from './stages';
import type { MergeRequest } from '../workflows/types';

export function createShardActivities(deps: StageDeps): ShardActivities {
  const stages = createStageActivities(deps);
  return {
    // The stage activity itself (hashing, done/skip rule, lease, runner, manifest check), with the shard list.
    mergeShards: (req: MergeRequest) => stages.runStage(req),
  };
}
