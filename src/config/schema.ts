// The one schema of a run config (YAML). Unknown keys are rejected everywhere, so a typo is an error, not a silent default.
// Stage sections are passed to the Python stages as spec.params; their keys match what scripts/<stage>.py reads.
import { z } from 'zod';
import { MAX_CLASS_SIZE, stageGpus } from '../queues';

const duration = z
  .string()
  .regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'a duration like "90s", "30m" or "2h"')
  .describe('Duration: a number and a unit (ms, s, m, h, d)');

const dtype = z.enum(['auto', 'float32', 'bfloat16', 'float16']).default('auto').describe('auto = float32 on CPU, bfloat16 on GPU');
const device = z.enum(['auto', 'cpu', 'cuda']).default('auto');

export const LocalModelSchema = z
  .strictObject({
    path: z.string().min(1).optional().describe('Local HF model folder (relative paths are resolved against the config file)'),
    hub: z.string().regex(/^[\w.-]+\/[\w.-]+$/, 'a Hugging Face id like "org/name"').optional().describe('Hugging Face hub id'),
    tokenizer: z.string().min(1).optional().describe('Tokenizer folder or hub id, when it differs from the model'),
    dtype,
    device,
    template: z.string().min(1).default('chat').describe('"chat" (the tokenizer\'s chat template), "none" (plain "User: …\\n\\nAssistant:"), or a Jinja chat template'),
  })
  .refine((m) => Boolean(m.path) !== Boolean(m.hub), { message: 'set exactly one of "path" or "hub"' });

export const EndpointSchema = z.strictObject({
  endpoint: z.strictObject({
    base_url: z.url().describe('OpenAI-compatible base URL, e.g. https://api.openai.com/v1'),
    model: z.string().min(1),
    api_key_env: z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name').describe('Name of the env var holding the API key (the key itself never goes in a config)'),
  }),
});

export const ModelSchema = z.union([LocalModelSchema, EndpointSchema]);

const PromptsSchema = z
  .strictObject({
    path: z.string().min(1).optional().describe('Local JSONL: {id, messages, domain?} per line'),
    hf: z
      .strictObject({
        name: z.string().min(1).describe('dataset name or local path for datasets.load_dataset'),
        split: z.string().default('train'),
        config: z.string().optional(),
        columns: z
          .strictObject({ id: z.string().optional(), prompt: z.string().optional(), messages: z.string().optional(), domain: z.string().optional() })
          .prefault({}),
      })
      .optional(),
    limit: z.int().positive().nullable().default(null),
    on_bad_row: z.enum(['error', 'skip']).default('error'),
  })
  .refine((p) => Boolean(p.path) !== Boolean(p.hf), { message: 'set exactly one of "path" or "hf"' });

const backend = z.enum(['auto', 'hf', 'vllm']).default('auto').describe('hf (transformers), vllm, or auto: vllm where it is installed and measured faster on the device (see docs/operations.md, vLLM); the manifest records the pick and why');
const prob = z.number().min(0).max(1);
const shards = z
  .union([z.literal('auto'), z.int().min(1).max(1024)])
  .optional()
  .describe('split the stage into K shards by prompt ranges, run as parallel activities on the gpu queue (each resumes alone) and merged on the cpu queue, byte-identical to one activity; auto = one per gpu worker polling, at least 16 prompts each; unset or 1 = one activity (docs/operations.md, Sharded stages)');

export const SampleSchema = z.strictObject({
  n: z.int().min(2, 'must be at least 2: pairs need a best and a worst response').max(256).default(4).describe('responses per prompt (one seeded pass per response)'),
  seeds: z.array(z.int().nonnegative()).min(1).nullable().default(null).describe('explicit seeds; default derived from the run seed and iteration'),
  temperature: z.number().min(0).max(5).default(0.8),
  top_p: prob.gt(0).default(0.95),
  top_k: z.int().nonnegative().default(0),
  max_new_tokens: z.int().positive().default(256),
  max_prompt_tokens: z.int().positive().default(1024),
  truncation: z.enum(['left', 'middle']).default('middle'),
  stop: z.array(z.string().min(1)).default([]),
  stop_token_ids: z.array(z.int().nonnegative()).default([]),
  batch_size: z.int().positive().default(8),
  backend,
  tensor_parallel_size: z.int().positive().default(1),
  num_processes: z.int().positive().default(1).describe('data-parallel ranks on this machine (torchrun; one per GPU, each with its own engine under backend vllm): each samples a strided slice of the prompts, rank 0 merges'),
  system_prompt: z.string().nullable().default(null),
  shards,
});

export const ScoreSchema = z.strictObject({
  reward: z.enum(['sum', 'mean']).default('sum').describe('sum (the paper) or mean of per-token log-ratio ranks the responses'),
  max_prompt_tokens: z.int().positive().default(2048),
  max_response_tokens: z.int().positive().default(2048),
  batch_size: z.int().positive().default(8),
  max_batch_tokens: z.int().positive().default(8192).describe('cap on padded tokens per forward pass (bounds logits memory)'),
  shards,
  num_processes: z.int().positive().default(1).describe('data-parallel ranks on this machine (torchrun; one per GPU, each with its own engines under backend vllm): each scores a strided slice of the prompts, rank 0 merges'),
  prefix_cache_tokens: z.int().nonnegative().default(16384).describe('context positions whose KV is kept per model, so prompts sharing a prefix (a guidance exemplar, a system prompt) run it once; 0 = off'),
  backend,
  router: z
    .strictObject({
      kind: z
        .enum(['llm', 'label', 'field', 'fixed'])
        .default('llm')
        .describe('llm: a model picks the label (models.router, else the strong model); label: the prompt\'s own domain label where it has one, else the llm router; field: the prompt\'s domain (missing = CHAT); fixed: label'),
      label: z.enum(['CHAT', 'SAFETY', 'REASONING']).default('CHAT'),
      prompt: z
        .enum(['ratioloop', 'cdr'])
        .default('ratioloop')
        .describe('the classification prompt: ratioloop\'s own, or cdr = the reference code\'s CLASSIFY_PROMPT (read at run time from score.cdr_repo or the pinned download)'),
      max_new_tokens: z.int().positive().default(16).describe('answer length for an endpoint router'),
    })
    .prefault({}),
  guidance: z
    .strictObject({
      enabled: z.boolean().default(true),
      source: z
        .enum(['ratioloop', 'cdr'])
        .default('ratioloop')
        .describe('ratioloop = the library in dir (offline); cdr = the reference code\'s exemplar pools (SAFETY 3, REASONING 10), read at run time from score.cdr_repo or the pinned download'),
      dir: z.string().min(1).nullable().default(null).describe('guidance library folder (relative to the config file); null = the built-in library configs/guidance'),
      system_policy: z
        .enum(['keep', 'replace'])
        .nullable()
        .default(null)
        .describe('a guided prompt\'s own system message: keep (the domain\'s text before it) or replace (by the domain\'s, empty for cdr); null = the source\'s rule (ratioloop: keep, cdr: replace)'),
    })
    .prefault({}),
  cdr_repo: z
    .string()
    .min(1)
    .nullable()
    .default(null)
    .describe('a local clone of gx-ai-architect/CDR-preference-annotation for guidance.source / router.prompt cdr (relative to the config file); null = download the pinned files (sha256-checked) into .ratioloop/cache/cdr'),
});

export const PairsSchema = z.strictObject({
  min_margin: z.number().nonnegative().nullable().default(null),
  test_fraction: prob.lt(1).default(0.1),
  test_count: z.int().nonnegative().nullable().default(null),
});

export const LaunchSchema = z.strictObject({
  num_processes: z.int().positive().default(1),
  num_machines: z.int().positive().default(1),
  machine_rank: z.int().nonnegative().default(0),
  main_process_ip: z.string().nullable().default(null),
  main_process_port: z.int().min(1).max(65535).default(29500),
  mixed_precision: z.enum(['auto', 'no', 'fp16', 'bf16']).default('auto').describe('auto = bf16 on GPU, no on CPU'),
  deepspeed_zero_stage: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)]).nullable().default(null),
  fsdp: z.boolean().default(false),
  cpu: z.boolean().nullable().default(null).describe('force CPU training; null = when no GPU is present'),
});

export const TrainSchema = z.strictObject({
  beta: z.number().positive().default(2.0).describe('SimPO reward scale β'),
  gamma_beta_ratio: z.number().nonnegative().default(0.5).describe('γ/β; the target margin γ = β · gamma_beta_ratio'),
  learning_rate: z.number().positive().max(1).default(1e-6),
  lr_scheduler_type: z.enum(['cosine', 'linear', 'constant', 'constant_with_warmup']).default('cosine'),
  warmup_ratio: prob.default(0.1),
  num_train_epochs: z.number().positive().default(1),
  max_steps: z.int().positive().nullable().default(null),
  per_device_train_batch_size: z.int().positive().default(2),
  gradient_accumulation_steps: z.int().positive().default(1),
  max_length: z.int().positive().default(1024),
  max_prompt_length: z.int().positive().default(512),
  seed: z.int().nonnegative().nullable().default(null),
  dtype,
  gradient_checkpointing: z.boolean().default(false),
  save_steps: z.int().positive().nullable().default(null).describe('null = about four checkpoints per epoch'),
  save_total_limit: z.int().positive().default(2),
  logging_steps: z.int().positive().default(1),
  label_smoothing: z.number().min(0).max(0.5).default(0),
  sft_weight: z.number().nonnegative().default(0),
  report_to: z.union([z.enum(['auto', 'none', 'tensorboard', 'wandb']), z.array(z.enum(['tensorboard', 'wandb'])).min(1)]).optional()
    .describe('training logs through the Trainer; unset = auto: tensorboard when the tensorboard package is importable on the worker, else none (left out of the stage spec when unset, so older configs keep their spec hashes); event files in the train stage folder\'s tb/; wandb needs a W&B login on the worker'),
  launch: LaunchSchema.prefault({}),
});

const BENCHMARKS = ['arena_hard', 'alpaca_eval', 'mt_bench'] as const;

const benchLimit = z.union([z.int().positive(), z.null(), z.partialRecord(z.enum(BENCHMARKS), z.int().positive())]);
const answersSource = z.string().min(1).nullable().default(null).describe('a path, "official" (downloaded, pinned by revision and sha256), or null (the data folder\'s file / the baseline policy\'s answers)');

const judgePrompts = z.string().min(1).default('ratioloop').describe('judge prompts: ratioloop (this project\'s own wording, offline), official (the official file downloaded at a pinned commit, sha256-checked, cached), or a path to a file in the official layout (offline)');
const benchJudge = ModelSchema.nullable().default(null).describe('this benchmark\'s own judge (a model spec or {endpoint}); null = models.judge. The official MT-Bench judge is gpt-4, ArenaHard\'s and AlpacaEval\'s gpt-4-1106-preview');

export const EvaluateSchema = z.strictObject({
  enabled: z.boolean().default(true),
  benchmarks: z.array(z.enum(BENCHMARKS)).min(1).default([...BENCHMARKS]),
  data: z.string().min(1).nullable().default(null).describe('folder with the eval sets (layout of configs/eval); null = the built-in mini sets'),
  baseline: z.enum(['base_policy', 'official']).default('base_policy').describe('base_policy: answers of the iteration-0 policy are the ArenaHard baseline / AlpacaEval reference; official: answer files (see arena_hard.baseline_answers, alpaca_eval.reference_outputs)'),
  limit: benchLimit.default(null).describe('questions per benchmark: one number for all, or {benchmark: number}'),
  max_new_tokens: benchLimit.default(null).describe('answer limit in new tokens per turn: one number for all, or {benchmark: number}; null (or a benchmark left out) = the official limit: ArenaHard 4096, MT-Bench 1024, AlpacaEval the model\'s own length limit; a lower limit makes the result not leaderboard-comparable'),
  batch_size: z.int().positive().default(8),
  backend,
  top_p: prob.gt(0).default(1.0),
  bootstrap_rounds: z.int().positive().default(100),
  bootstrap_seed: z.int().nonnegative().default(42),
  shards: z
    .union([z.literal('auto'), z.int().min(1).max(1024)])
    .optional()
    .describe('split answer generation into K shards by answer batches, run as parallel activities on the gpu queue (each resumes alone), then one activity on the evaluate queue judges all the answers: the same outputs as one activity; auto = one per gpu worker polling, at least 16 questions each; unset or 1 = one activity (docs/operations.md, Sharded stages)'),
  model_name: z.string().min(1).nullable().default(null).describe('name written into answer files; null = ratioloop-iter<k>'),
  cache_dir: z.string().min(1).nullable().default(null).describe('download cache for official data; null = .ratioloop/cache/eval'),
  arena_hard: z
    .strictObject({
      questions: z.string().min(1).nullable().default(null),
      baseline_answers: answersSource,
      bradley_terry: z.boolean().default(false),
      verdict_parser: z.enum(['v0.1', 'latest']).default('v0.1'),
      prompts: judgePrompts,
      judge: benchJudge,
    })
    .prefault({}),
  alpaca_eval: z
    .strictObject({
      instructions: z.string().min(1).nullable().default(null),
      reference_outputs: answersSource,
      instruction_difficulty: z.string().min(1).nullable().default(null).describe("instruction_difficulty.csv (HF dataset tatsu-lab/alpaca_eval): 'official' (pinned download) or a path; without gamed, the length_controlled_noreg fit uses it"),
      gamed: z.string().min(1).nullable().default(null).describe("df_gamed.csv (HF dataset tatsu-lab/alpaca_eval), needed for the leaderboard's LC (length_controlled_v1): 'official' (pinned download into the eval cache) or a path (offline); without it lc_win_rate is null with the reason"),
      judge_temperature: z.number().min(0).max(2).default(1.0),
      prompts: judgePrompts,
      judge: benchJudge,
    })
    .prefault({}),
  mt_bench: z
    .strictObject({
      questions: z.string().min(1).nullable().default(null),
      reference_answers: z.string().min(1).nullable().default(null).describe('FastChat reference answers (a path or "official"); null = the official GPT-4 references when the questions are the official ones, else the data folder\'s reference_answer.jsonl, else the questions\' own reference fields; a math/reasoning/coding question without one is an error'),
      prompts: judgePrompts,
      judge: benchJudge,
    })
    .prefault({}),
  judge: z
    .strictObject({
      max_tokens: z.union([z.int().positive(), z.null(), z.partialRecord(z.enum(BENCHMARKS), z.int().positive())]).default(null),
      concurrency: z.int().positive().default(4),
      max_retries: z.int().nonnegative().default(5),
      backoff_s: z.number().positive().default(1.0),
      timeout_s: z.number().positive().default(120),
      cache: z.boolean().default(true),
      cache_path: z.string().min(1).nullable().default(null),
      max_invalid_share: prob.default(0.1).describe('the stage fails when more than this share of a benchmark\'s judgments is invalid (judge errors that cannot be retried, no verdict); below it they are counted and left out, as the official tools do'),
      position_debias: z.enum(['auto', 'on', 'off']).default('auto').describe('judge both orders and average the verdict log-probs (cancels an additive position bias); auto: local judges only, so API judges keep the official protocols'),
      calibrate: z.boolean().default(false).describe('with position_debias, also subtract the log-probs of a content-free pair (ArenaHard; one more judge call per question)'),
      max_dominant_share: prob.default(0.9).describe('judge_informative is false when one verdict position (or one MT-Bench rating) exceeds this share'),
      consistency_check: z.boolean().default(false).describe('AlpacaEval: also judge the other order where the verdicts are not combined (API judges), only to measure position consistency; doubles those judge calls, verdicts unchanged'),
    })
    .prefault({}),
});

// Retries (docs/operations.md, Retries): unset keys fall back to timeouts.default, then to the stage's built-in value.
const maxAttempts = z.int().positive().nullable().describe('attempts in all; null = no cap (bounded by scheduleToClose). Unset = per stage: null for the resumable stages (sample, score, train, evaluate), 3 for pairs');
const scheduleToClose = duration.nullable().describe('all attempts of a stage together, backoff included; null = no bound. Unset = per stage: 72h for the resumable stages, null for pairs. Must exceed the stage\'s run time');
const maxFailures = z.int().positive().describe('failures the stage program itself reports on a live worker (a crash, a kill, a stall) before the stage fails; lost workers and heartbeat timeouts (preemptions) do not count');

// Stall watchdog (docs/architecture.md, Stall watchdog): unset falls back to timeouts.default, then to the stage's built-in value.
const stallTimeout = z.union([duration, z.literal(0), z.null()]).describe('the stage program printed no progress, phase or alive line for this long: its process group is killed and the attempt fails as StageStalled (retried); 0 or null = off. Unset = per stage: 30m for sample, score, train and evaluate, 10m for pairs');

const StageTimeoutSchema = z.strictObject({
  startToClose: duration.optional(),
  heartbeat: duration.optional(),
  stallTimeout: stallTimeout.optional(),
  maxAttempts: maxAttempts.optional(),
  initialInterval: duration.optional(),
  backoffCoefficient: z.number().min(1).optional(),
  scheduleToClose: scheduleToClose.optional(),
  maximumInterval: duration.describe('the longest wait between two attempts').optional(),
  maxFailures: maxFailures.optional(),
});

export const TimeoutsSchema = z
  .strictObject({
    default: z
      .strictObject({
        startToClose: duration.default('24h'),
        heartbeat: duration.default('2m'),
        stallTimeout: stallTimeout.optional(),
        maxAttempts: maxAttempts.optional(),
        initialInterval: duration.default('5s'),
        backoffCoefficient: z.number().min(1).default(2),
        scheduleToClose: scheduleToClose.optional(),
        maximumInterval: duration.default('5m').describe('the longest wait between two attempts'),
        maxFailures: maxFailures.default(3),
      })
      .prefault({}),
    sample: StageTimeoutSchema.optional(),
    score: StageTimeoutSchema.optional(),
    pairs: StageTimeoutSchema.optional(),
    train: StageTimeoutSchema.optional(),
    evaluate: StageTimeoutSchema.optional(),
  })
  .prefault({});

const queueKind = z.enum(['cpu', 'gpu']).optional();
const queueName = z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, 'letters, digits, ".", "_" or "-"');

export const ConfigSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,40}$/, 'letters, digits, ".", "_" or "-" (used in run ids)').default('run'),
    seed: z.int().nonnegative().default(0),
    iterations: z.int().min(1).max(100).default(1),
    runsDir: z.string().min(1).default('runs').describe('where run folders go (relative to the current directory)'),
    models: z.strictObject({
      policy: LocalModelSchema,
      strong: LocalModelSchema,
      weak: LocalModelSchema,
      router: ModelSchema.optional(),
      judge: ModelSchema.optional(),
    }),
    prompts: PromptsSchema,
    sample: SampleSchema.prefault({}),
    score: ScoreSchema.prefault({}),
    pairs: PairsSchema.prefault({}),
    train: TrainSchema.prefault({}),
    evaluate: EvaluateSchema.prefault({}),
    taskQueues: z
      .strictObject({
        control: queueName.optional().describe('full name of the control queue (workflow and bookkeeping); unset = PREFIX-control (PREFIX: queues.prefix)'),
        cpu: queueName.optional().describe('full name of the cpu queue; unset = PREFIX-cpu'),
        gpu: queueName.optional().describe('full name of the gpu queue; unset = PREFIX-gpu. Resource-class queues add -x2, -x4, … to this name'),
      })
      .prefault({}),
    queues: z
      .strictObject({
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9._-]{1,180}$/, 'letters, digits, ".", "_" or "-" (at most 180)')
          .nullable()
          .default(null)
          .describe('queue name prefix (a project name, so its workers serve only its runs); null = $RATIOLOOP_QUEUE_PREFIX, else ratioloop-USER (the login name)'),
        stages: z
          .strictObject({ sample: queueKind, score: queueKind, pairs: queueKind, train: queueKind, evaluate: queueKind })
          .prefault({})
          .describe('the queue kind of each stage (unset: pairs cpu, the others gpu); a gpu stage needing k > 1 GPUs on one machine goes to the resource-class queue GPU-xC (the gpu queue\'s name, C = k rounded up to a power of two), polled by workers with at least C GPU slots'),
      })
      .prefault({}),
    timeouts: TimeoutsSchema,
  })
  .superRefine((c, ctx) => {
    // A gpu stage takes its GPUs on one machine: more than the largest resource class is a machine nobody has.
    const gpuStages = { sample: ['sample', 'num_processes'], score: ['score', 'num_processes'], train: ['train', 'launch', 'num_processes'] } as const;
    for (const [stage, where] of Object.entries(gpuStages) as [keyof typeof gpuStages, readonly string[]][]) {
      const k = stageGpus(stage, c[stage]);
      if ((c.queues.stages[stage] ?? 'gpu') === 'gpu' && k > MAX_CLASS_SIZE) {
        ctx.addIssue({ code: 'custom', path: [...where], message: `needs ${k} GPUs on one machine; at most ${MAX_CLASS_SIZE} (the largest resource class) are supported` });
      }
    }
    if (c.evaluate.enabled && !c.models.judge) {
      ctx.addIssue({ code: 'custom', path: ['models', 'judge'], message: 'required when evaluate.enabled is true (or set evaluate.enabled: false)' });
    }
    if (c.train.max_prompt_length >= c.train.max_length) {
      ctx.addIssue({ code: 'custom', path: ['train', 'max_prompt_length'], message: `must be below train.max_length (${c.train.max_length})` });
    }
    if (c.sample.seeds && c.sample.seeds.length !== c.sample.n) {
      ctx.addIssue({ code: 'custom', path: ['sample', 'seeds'], message: `has ${c.sample.seeds.length} seeds but sample.n is ${c.sample.n}: give one seed per response` });
    }
    const l = c.train.launch;
    // main_process_ip may stay null with num_machines > 1: a run's gang gives each machine rank 0's address (workflows/gang.ts).
    if (l.num_processes % l.num_machines !== 0) {
      ctx.addIssue({ code: 'custom', path: ['train', 'launch', 'num_processes'], message: `is the total over all machines: must be a multiple of num_machines (${l.num_machines})` });
    }
    if (l.machine_rank >= l.num_machines) {
      ctx.addIssue({ code: 'custom', path: ['train', 'launch', 'machine_rank'], message: `must be below num_machines (${l.num_machines})` });
    }
  });

export type RunConfig = z.output<typeof ConfigSchema>;
export type ModelConfig = z.output<typeof ModelSchema>;
