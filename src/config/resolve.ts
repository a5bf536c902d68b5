// Config → the plain plan a workflow receives: paths made absolute, defaults applied, per-stage params and options.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { canonicalJson } from '../../activities/manifests';
import { ALL_STAGES } from '../../workflows/plan';
import type { InputRef, QueueKind, RunPlan, RunQueues, StageActivityOptions, StageName } from '../../workflows/types';
import { projectRoot } from '../paths';
import { runDirOf } from '../runStore';
import { isGpuClass, queueNames, stageQueue } from '../queues';
import type { ModelConfig, RunConfig } from './schema';

/** Each stage's queue kind unless queues.stages says otherwise. */
export const STAGE_QUEUES: Record<StageName, 'cpu' | 'gpu'> = { sample: 'gpu', score: 'gpu', pairs: 'cpu', train: 'gpu', evaluate: 'gpu' };

/** The queue kind each stage is planned on: queues.stages (or the default), with the GPU class of a k-GPU stage. */
export function stageQueues(config: RunConfig): Record<StageName, QueueKind> {
  // The config sections hold the keys stageGpus reads (num_processes, tensor_parallel_size, backend, launch).
  const sections: Record<StageName, Record<string, unknown>> = { sample: config.sample, score: config.score, pairs: config.pairs, train: config.train, evaluate: config.evaluate };
  return Object.fromEntries(ALL_STAGES.map((s) => [s, stageQueue(config.queues.stages[s] ?? STAGE_QUEUES[s], s, sections[s])])) as Record<StageName, QueueKind>;
}

/** The run's queue names: prefixed (or explicit in taskQueues), with the classes of the stages it runs. */
export function runQueues(config: RunConfig, env: NodeJS.ProcessEnv = process.env): RunQueues {
  const kinds = stageQueues(config);
  const stages = ALL_STAGES.filter((s) => s !== 'evaluate' || config.evaluate.enabled);
  const classes = [...new Set(stages.map((s) => kinds[s]).filter(isGpuClass))];
  return queueNames({ prefix: config.queues.prefix, explicit: config.taskQueues, classes, env });
}

export const BUILTIN_GUIDANCE = path.join(projectRoot, 'configs', 'guidance');
export const BUILTIN_EVAL_DATA = path.join(projectRoot, 'configs', 'eval');

export function configHash(config: RunConfig): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

/** Make relative paths absolute against the config file's folder; hub ids and endpoints pass through. */
function resolveModel<M extends ModelConfig>(m: M, base: string): M {
  if ('endpoint' in m) return m;
  return { ...m, ...(m.path ? { path: path.resolve(base, m.path) } : {}), ...(m.tokenizer && /^[.~/]/.test(m.tokenizer) ? { tokenizer: path.resolve(base, m.tokenizer) } : {}) };
}

/** A config path value: null and "official" pass through; anything else becomes absolute against the config folder. */
const filePath = (v: string | null, base: string): string | null => (v === null || v === 'official' ? v : path.resolve(base, v));
/** A judge prompts value: ratioloop and official pass through; a path becomes absolute. */
const promptsPath = (v: string, base: string): string => (v === 'ratioloop' ? v : (filePath(v, base) as string));
const benchJudge = (m: ModelConfig | null, base: string): ModelConfig | null => (m ? resolveModel(m, base) : null);

function resolveEvalPaths(e: RunConfig['evaluate'], base: string) {
  return {
    cache_dir: filePath(e.cache_dir, base),
    arena_hard: {
      ...e.arena_hard,
      questions: filePath(e.arena_hard.questions, base),
      baseline_answers: filePath(e.arena_hard.baseline_answers, base),
      prompts: promptsPath(e.arena_hard.prompts, base),
      judge: benchJudge(e.arena_hard.judge, base),
    },
    alpaca_eval: {
      ...e.alpaca_eval,
      instructions: filePath(e.alpaca_eval.instructions, base),
      reference_outputs: filePath(e.alpaca_eval.reference_outputs, base),
      instruction_difficulty: filePath(e.alpaca_eval.instruction_difficulty, base),
      prompts: promptsPath(e.alpaca_eval.prompts, base),
      judge: benchJudge(e.alpaca_eval.judge, base),
    },
    mt_bench: {
      ...e.mt_bench,
      questions: filePath(e.mt_bench.questions, base),
      reference_answers: filePath(e.mt_bench.reference_answers, base),
      prompts: promptsPath(e.mt_bench.prompts, base),
      judge: benchJudge(e.mt_bench.judge, base),
    },
    judge: { ...e.judge, cache_path: filePath(e.judge.cache_path, base) },
  };
}

const ms = (d: string): string => d.replace(/\s+/g, ' ');

/**
 * Built-in retry bounds where neither timeouts.<stage> nor timeouts.default sets them. Stages that resume from
 * partial/ lose nothing to a retry, so preemptions must not use up attempts: no cap, bounded in time. pairs redoes
 * its (small) work each time and keeps a cap.
 */
export const STAGE_RETRY_DEFAULTS: Record<StageName, { maxAttempts: number | null; scheduleToClose: string | null }> = {
  sample: { maxAttempts: null, scheduleToClose: '72h' },
  score: { maxAttempts: null, scheduleToClose: '72h' },
  pairs: { maxAttempts: 3, scheduleToClose: null },
  train: { maxAttempts: null, scheduleToClose: '72h' },
  evaluate: { maxAttempts: null, scheduleToClose: '72h' },
};

/** The stage's value, else the default section's, else the built-in one; null is a value (no cap / no bound). */
const pick = <T>(stage: T | undefined, dflt: T | undefined, builtin: T): T => (stage !== undefined ? stage : dflt !== undefined ? dflt : builtin);

/** The stall watchdog's built-in limits: long enough for a slow batch or a big checkpoint save between two lines. */
export const STALL_TIMEOUT_DEFAULTS: Record<StageName, string> = { sample: '30m', score: '30m', pairs: '10m', train: '30m', evaluate: '30m' };

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A schema-checked duration ("90s", "30m") in milliseconds. */
export function durationMs(d: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(d.trim());
  if (!m) throw new Error(`not a duration: ${d}`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** The stage's stallTimeout, else timeouts.default's, else the built-in one; 0 and null turn the watchdog off. */
function stallTimeoutMs(stage: StageName, own: string | 0 | null | undefined, dflt: string | 0 | null | undefined): number {
  const v = own !== undefined ? own : dflt !== undefined ? dflt : STALL_TIMEOUT_DEFAULTS[stage];
  return v === null || v === 0 ? 0 : durationMs(v);
}

function stageOptions(config: RunConfig, stage: StageName): StageActivityOptions {
  const d = config.timeouts.default;
  const s = config.timeouts[stage] ?? {};
  const attempts = pick(s.maxAttempts, d.maxAttempts, STAGE_RETRY_DEFAULTS[stage].maxAttempts);
  const bound = pick(s.scheduleToClose, d.scheduleToClose, STAGE_RETRY_DEFAULTS[stage].scheduleToClose);
  return {
    startToCloseTimeout: ms(s.startToClose ?? d.startToClose),
    heartbeatTimeout: ms(s.heartbeat ?? d.heartbeat),
    maximumAttempts: attempts ?? 0,
    initialInterval: ms(s.initialInterval ?? d.initialInterval),
    backoffCoefficient: s.backoffCoefficient ?? d.backoffCoefficient,
    stallTimeoutMs: stallTimeoutMs(stage, s.stallTimeout, d.stallTimeout),
    ...(bound ? { scheduleToCloseTimeout: ms(bound) } : {}),
    maximumInterval: ms(s.maximumInterval ?? d.maximumInterval),
    maxFailures: s.maxFailures ?? d.maxFailures,
  };
}

export interface ResolveOptions {
  configPath: string;
  runId: string;
  iterations?: number;
}

export function resolvePlan(config: RunConfig, opts: ResolveOptions): RunPlan {
  const base = path.dirname(path.resolve(opts.configPath));
  const models = {
    policy: resolveModel(config.models.policy, base),
    strong: resolveModel(config.models.strong, base),
    weak: resolveModel(config.models.weak, base),
    ...(config.models.router ? { router: resolveModel(config.models.router, base) } : {}),
    ...(config.models.judge ? { judge: resolveModel(config.models.judge, base) } : {}),
  };
  const { on_bad_row, path: promptsPath, hf, limit } = config.prompts;
  // `shards` is how a stage runs, not what it computes: kept out of spec.params (and so out of the spec hash).
  const { shards: sampleShards, ...sample } = config.sample;
  const { guidance, cdr_repo, shards: scoreShards, ...score } = config.score;
  const shardsOf: Partial<Record<StageName, { shards: number | 'auto' }>> = {
    ...(sampleShards !== undefined ? { sample: { shards: sampleShards } } : {}),
    ...(scoreShards !== undefined ? { score: { shards: scoreShards } } : {}),
    ...(config.evaluate.shards !== undefined ? { evaluate: { shards: config.evaluate.shards } } : {}),
  };
  const { enabled: _evalEnabled, data: evalData, baseline, shards: _evalShards, ...evaluate } = config.evaluate;

  const params: Record<StageName, Record<string, unknown>> = {
    sample: { ...sample, on_bad_row, prompts: { hf: hf ?? null, limit }, models: { policy: models.policy } },
    score: {
      ...score,
      guidance: { enabled: guidance.enabled, source: guidance.source, system_policy: guidance.system_policy },
      cdr_repo: cdr_repo ? path.resolve(base, cdr_repo) : null,
      models: { strong: models.strong, weak: models.weak, ...(models.router ? { router: models.router } : {}) } },
    pairs: { ...config.pairs, reward: config.score.reward },
    train: { ...config.train, models: { policy: models.policy } },
    evaluate: { ...evaluate, ...resolveEvalPaths(config.evaluate, base), models: { policy: models.policy, ...(models.judge ? { judge: models.judge } : {}) } },
  };

  const staticInputs: RunPlan['staticInputs'] = {};
  if (promptsPath) staticInputs.prompts = { path: path.resolve(base, promptsPath) };
  staticInputs.guidance = { path: guidance.dir ? path.resolve(base, guidance.dir) : BUILTIN_GUIDANCE };
  staticInputs.evalData = { path: evalData ? path.resolve(base, evalData) : BUILTIN_EVAL_DATA };
  if (models.policy.path) staticInputs.policy = { path: models.policy.path } satisfies InputRef;

  const stages = ALL_STAGES.filter((s) => s !== 'evaluate' || config.evaluate.enabled);
  const kinds = stageQueues(config);
  return {
    runId: opts.runId,
    runDir: runDirOf(config.runsDir, opts.runId),
    seed: config.seed,
    iterations: opts.iterations ?? config.iterations,
    configHash: configHash(config),
    stages,
    stagePlans: Object.fromEntries(ALL_STAGES.map((s) => [s, { queue: kinds[s], params: params[s], options: stageOptions(config, s), ...shardsOf[s] }])) as RunPlan['stagePlans'],
    staticInputs,
    evaluateAgainstBasePolicy: baseline === 'base_policy',
    queues: runQueues(config),
  };
}
