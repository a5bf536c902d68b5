// Pure planning rules of a run: which stages run, on which queue, with which inputs. Deterministic.
import type { InputRef, OutputRef, RunPlan, ShardRef, ShardSetting, StageName, StageResult, StageStatus } from './types';

export const ALL_STAGES: readonly StageName[] = ['sample', 'score', 'pairs', 'train', 'evaluate'];

const ref = (o: OutputRef | undefined, what: string): InputRef => {
  if (!o) throw new Error(`missing stage output ${what}`);
  return { path: o.path, sha256: o.sha256 };
};

/** Inputs of a stage in iteration k, from the static inputs, this iteration's results and the current policy. */
export function stageInputs(
  plan: RunPlan,
  stage: StageName,
  done: Partial<Record<StageName, StageResult>>,
  policy: InputRef | undefined,
): Record<string, InputRef> {
  const s = plan.staticInputs;
  const withPolicy = (inputs: Record<string, InputRef>): Record<string, InputRef> => (policy ? { ...inputs, policy } : inputs);
  switch (stage) {
    case 'sample':
      return withPolicy(s.prompts ? { prompts: s.prompts } : {});
    case 'score':
      return { samples: ref(done.sample?.outputs.samples, 'sample.samples'), ...(s.guidance ? { guidance: s.guidance } : {}) };
    case 'pairs':
      return { scores: ref(done.score?.outputs.scores, 'score.scores'), samples: ref(done.sample?.outputs.samples, 'sample.samples') };
    case 'train': {
      const test = done.pairs?.outputs.pairs_test;
      return withPolicy({ pairs: ref(done.pairs?.outputs.pairs, 'pairs.pairs'), ...(test ? { pairs_test: ref(test, 'pairs.pairs_test') } : {}) });
    }
    case 'evaluate': {
      const trained = done.train?.outputs.model;
      const inputs: Record<string, InputRef> = {};
      if (trained) inputs.policy = ref(trained, 'train.model');
      else if (policy) inputs.policy = policy;
      if (plan.evaluateAgainstBasePolicy && s.policy) inputs.baseline = s.policy;
      if (s.evalData) inputs.data = s.evalData;
      return inputs;
    }
  }
}

/** The policy the next iteration samples from: this iteration's trained model, if it trained. */
export function nextPolicy(current: InputRef | undefined, done: Partial<Record<StageName, StageResult>>): InputRef | undefined {
  const m = done.train?.outputs.model;
  return m ? { path: m.path, sha256: m.sha256 } : current;
}

/** Status slots of iteration k; stages already finished (carried over by continue-as-new) start as done/skipped. */
export function iterationStatuses(plan: RunPlan, k: number, done: Partial<Record<StageName, StageResult>> = {}): StageStatus[] {
  return plan.stages.map((stage) => {
    const r = done[stage];
    const base: StageStatus = { iteration: k, stage, queue: plan.stagePlans[stage].queue, status: 'pending' };
    return r ? { ...base, status: r.skipped ? 'skipped' : 'done', durationMs: r.durationMs, metrics: r.metrics } : base;
  });
}

/** Later stages of the same iteration that need a stage's outputs (evaluate falls back to the policy without train). */
export const DEPENDENTS: Record<StageName, readonly StageName[]> = {
  sample: ['score', 'pairs'],
  score: ['pairs'],
  pairs: ['train'],
  train: [],
  evaluate: [],
};

/** Why stage `stage` of iteration k may not be skipped now, or undefined if it may. */
export function skipProblem(plan: RunPlan, k: number, stage: StageName, current: { iteration: number; started: readonly StageName[] }, skip: readonly string[]): string | undefined {
  if (!plan.stages.includes(stage)) return `stage ${stage} is not part of this run (stages: ${plan.stages.join(', ')})`;
  if (k < current.iteration || (k === current.iteration && current.started.includes(stage))) return `iteration ${k} ${stage} has already started`;
  const blocking = DEPENDENTS[stage].filter((d) => plan.stages.includes(d) && !skip.includes(`${k}:${d}`));
  if (blocking.length) return `iteration ${k} ${blocking.join(', ')} need${blocking.length === 1 ? 's' : ''} ${stage}'s outputs: skip ${blocking.join(' and ')} first`;
  return undefined;
}

/** Stages that can run as shards (prompt ranges, or evaluate's answer batches, over parallel activities, then one merge). */
export const SHARDABLE_STAGES: readonly StageName[] = ['sample', 'score', 'evaluate'];

/** Where a sharded stage's merge runs: evaluate's merge judges every answer (a local judge needs the stage's device), so
 * it runs on the stage's own queue; the others only concatenate, on the cpu queue. */
export function mergeQueue(plan: RunPlan, stage: StageName): string {
  return stage === 'evaluate' ? (plan.queues[plan.stagePlans[stage].queue] ?? plan.queues.gpu) : plan.queues.cpu;
}
/** `shards: auto`: at least this many prompts per shard, and at most this many shards. */
export const MIN_PROMPTS_PER_SHARD = 16;
export const MAX_AUTO_SHARDS = 64;

/** The stage's shard setting when it may run sharded; undefined = one activity, as before sharding existed. */
export function shardSetting(plan: RunPlan, stage: StageName): ShardSetting | undefined {
  const s = plan.stagePlans[stage].shards;
  if (!SHARDABLE_STAGES.includes(stage) || s === undefined || s === 1) return undefined;
  return s;
}

/**
 * `shards: auto`: one shard per gpu worker polling (equal shards finish together; a lost worker costs one shard), no
 * fewer than MIN_PROMPTS_PER_SHARD prompts each, at most MAX_AUTO_SHARDS. Unknown workers: 1 (no sharding).
 */
export function autoShardCount(prompts: number | undefined, workers: number | undefined): number {
  const byWork = prompts === undefined ? MAX_AUTO_SHARDS : Math.floor(prompts / MIN_PROMPTS_PER_SHARD);
  return Math.max(1, Math.min(byWork, workers ?? 1, MAX_AUTO_SHARDS));
}

/** A shard's folder inside its stage folder: shard-0003-of-0008 (sorts in index order). */
export function shardDirName(shard: ShardRef): string {
  const pad = (n: number): string => String(n).padStart(4, '0');
  return `shard-${pad(shard.index)}-of-${pad(shard.count)}`;
}
