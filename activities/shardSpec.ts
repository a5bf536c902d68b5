// A shard's folder and spec params, and the merge's shard list: what the stage activity does differently for the
// shards of a sharded stage and for their merge (activities/mergeShards.ts).
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { MergeRequest, ShardRef, StageRequest, StageResult } from '../workflows/types';
import { shardDirName } from '../workflows/plan';
import { stageDirOf, writeJsonAtomic } from '../src/runStore';

/** Names the shard list for the stage program's merge mode (scripts/ratioloop_py/shards.py). */
export const MERGE_ENV = 'RATIOLOOP_MERGE_SHARDS';

function checked(s: ShardRef): ShardRef {
  if (!Number.isInteger(s.index) || !Number.isInteger(s.count) || s.count < 1 || s.index < 0 || s.index >= s.count) {
    throw ApplicationFailure.nonRetryable(`shard ${JSON.stringify(s)}: expected integers 0 <= index < count`, 'BadInput');
  }
  return s;
}

/** The stage folder, or the shard's own folder inside it (its spec, partial state, manifest and attempt logs). */
export function stageOutputDir(req: StageRequest): string {
  const dir = stageDirOf(req.runDir, req.iteration, req.stage);
  return req.shard ? path.join(dir, shardDirName(checked(req.shard))) : dir;
}

/** spec.params: a shard's carry `shard: {index, count}` (so each shard has its own spec hash). */
export function specParams(req: StageRequest): Record<string, unknown> {
  return req.shard ? { ...req.params, shard: { index: req.shard.index, count: req.shard.count } } : req.params;
}

/** For a shard: the spec of the whole stage (its own folder, the unsharded params). Its valid manifest means the stage
 * is done, whichever way it ran (unsharded, or merged from another shard count): the shard has nothing left to do. */
export function wholeStageSpec<T extends { params: Record<string, unknown>; outputDir: string }>(req: StageRequest, spec: T): T | undefined {
  return req.shard ? { ...spec, params: req.params, outputDir: stageDirOf(req.runDir, req.iteration, req.stage) } : undefined;
}

const isMerge = (req: StageRequest): req is MergeRequest => Array.isArray((req as Partial<MergeRequest>).shards);

/** For a merge: write the shard list (index, folder, outputs by path + sha256) and name it for the program. */
export async function mergeEnv(req: StageRequest, outputDir: string): Promise<Record<string, string>> {
  if (!isMerge(req)) return {};
  const count = req.shards.length;
  const shards = req.shards.map((r: StageResult, index) => {
    if (r.stage !== req.stage || r.iteration !== req.iteration) {
      throw ApplicationFailure.nonRetryable(`merge of iteration ${req.iteration} ${req.stage}: shard ${index} is iteration ${r.iteration} ${r.stage}`, 'BadInput');
    }
    const outputs = Object.fromEntries(Object.entries(r.outputs).map(([name, o]) => [name, { path: o.path, sha256: o.sha256 }]));
    return { index, count, outputDir: path.join(outputDir, shardDirName({ index, count })), outputs };
  });
  const file = path.join(outputDir, 'shards.json');
  await writeJsonAtomic(file, { shards });
  return { [MERGE_ENV]: file };
}
