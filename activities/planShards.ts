// `shards: auto` (control queue): how many prompts the stage has (rows of its prompts or samples file, cut by
// prompts.limit; evaluate: its questions when params.limit bounds them) and how many workers poll the gpu queue (DescribeTaskQueue), into workflows/plan.ts autoShardCount.
import { createReadStream } from 'node:fs';
import type { ShardPlanResult, StageRequest } from '../workflows/types';
import { autoShardCount } from '../workflows/plan';

/** Workers polling a task queue for activities, or undefined when the cluster will not say. */
export type PollerCount = (queue: string) => Promise<number | undefined>;

/** Non-empty lines of a JSONL file (an upper bound on its prompts: bad rows and duplicates are dropped later). */
export async function countRows(file: string): Promise<number> {
  let rows = 0;
  let inRow = false;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    for (const byte of chunk) {
      if (byte === 0x0a) {
        if (inRow) rows++;
        inRow = false;
      } else if (byte !== 0x20 && byte !== 0x0d && byte !== 0x09) inRow = true;
    }
  }
  return rows + (inRow ? 1 : 0);
}

/** Questions an evaluate stage answers when params.limit bounds every benchmark; else undefined (the sets are only read
 * by the stage program: each benchmark's own file, the official or the built-in one). */
function evalQuestions(params: StageRequest['params']): number | undefined {
  const benchmarks = Array.isArray(params.benchmarks) ? (params.benchmarks as string[]) : ['arena_hard', 'alpaca_eval', 'mt_bench'];
  const limit = params.limit;
  const per = (b: string): unknown => (typeof limit === 'object' && limit !== null ? (limit as Record<string, unknown>)[b] : limit);
  const counts = benchmarks.map(per);
  return counts.every((n) => typeof n === 'number' && n > 0) ? (counts as number[]).reduce((a, b) => a + b, 0) : undefined;
}

async function promptsOf(stage: StageRequest['stage'], inputs: StageRequest['inputs'], params: StageRequest['params']): Promise<number | undefined> {
  if (stage === 'evaluate') return evalQuestions(params);
  const file = stage === 'sample' ? inputs.prompts?.path : stage === 'score' ? inputs.samples?.path : undefined;
  if (!file) return undefined; // a dataset source (prompts.hf): not counted here
  const rows = await countRows(file);
  const limit = stage === 'sample' ? (params.prompts as { limit?: unknown } | undefined)?.limit : undefined;
  return typeof limit === 'number' && limit > 0 ? Math.min(rows, limit) : rows;
}

export async function planShards(
  req: { stage: StageRequest['stage']; inputs: StageRequest['inputs']; params: StageRequest['params']; queue: string },
  pollers?: PollerCount,
): Promise<ShardPlanResult> {
  const prompts = await promptsOf(req.stage, req.inputs, req.params).catch(() => undefined);
  const workers = pollers ? await pollers(req.queue).catch(() => undefined) : undefined;
  return { count: autoShardCount(prompts, workers), ...(prompts !== undefined ? { prompts } : {}), ...(workers !== undefined ? { workers } : {}) };
}

interface DescribeTaskQueue {
  describeTaskQueue(req: { namespace: string; taskQueue: { name: string }; taskQueueType: number }): Promise<{ pollers?: unknown[] | null }>;
}

/** PollerCount over a connection's workflow service. Temporal forgets a poller a few minutes after it stops polling. */
export function pollersVia(service: DescribeTaskQueue, namespace: string): PollerCount {
  const ACTIVITY = 2; // TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
  return async (queue) => {
    try {
      return ((await service.describeTaskQueue({ namespace, taskQueue: { name: queue }, taskQueueType: ACTIVITY })).pollers ?? []).length;
    } catch {
      return undefined; // not allowed on this cluster
    }
  };
}
