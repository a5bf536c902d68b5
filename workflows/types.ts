// Plain data shared by the CLI, the workflow and the activities. No runtime imports: workflows stay light.

export type StageName = 'sample' | 'score' | 'pairs' | 'train' | 'evaluate';
export type QueueKind = 'cpu' | 'gpu' | GpuClass;
/** A resource-class queue: stages that need k > 1 GPUs on one machine, k rounded up to a power of two (gpu-x2, gpu-x8). */
export type GpuClass = `gpu-x${number}`;

/** Task queue names by kind; a plan names the classes its stages use. */
export interface RunQueues {
  control: string;
  cpu: string;
  gpu: string;
  [cls: GpuClass]: string;
}

/** A file or folder handed from one stage to the next: by reference, never by content. */
export interface InputRef {
  path: string;
  /** Known for stage outputs (from their manifest); computed by the activity for static inputs. */
  sha256?: string;
}

export interface OutputRef {
  name: string;
  path: string;
  sha256: string;
  rows?: number;
}

export interface StageManifest {
  stage: string;
  specHash: string;
  inputs: Record<string, InputRef>;
  outputs: OutputRef[];
  metrics: Record<string, unknown>;
  versions: Record<string, string>;
  device: string;
  startedAt: string;
  finishedAt: string;
}

/** Temporal activity options for one stage, as durations Temporal understands ("90s", "2h"). */
export interface StageActivityOptions {
  startToCloseTimeout: string;
  heartbeatTimeout: string;
  /** Attempts in all; 0 = no cap (resumable stages: bounded by scheduleToCloseTimeout instead). */
  maximumAttempts: number;
  initialInterval: string;
  backoffCoefficient: number;
  /** All attempts together, backoff included; absent (plans from before it) = no bound. */
  scheduleToCloseTimeout?: string;
  /** The longest wait between attempts; absent = Temporal's default (100 × initialInterval). */
  maximumInterval?: string;
  /** Failures the stage program reports on a live worker (crash, kill, stall) before the stage fails for good; lost
   * workers and heartbeat timeouts (preemptions) do not count. Absent = no such cap. */
  maxFailures?: number;
  /** The runner's stall watchdog (no protocol line for this long: kill, retry); 0 = off. Absent in older plans: off. */
  stallTimeoutMs?: number;
}

/** How many shards a stage runs as: K, or `auto` (from the prompts and the gpu workers polling; workflows/plan.ts). */
export type ShardSetting = number | 'auto';

export interface StagePlan {
  queue: QueueKind;
  /** The stage's resolved config section plus the model specs it needs (becomes spec.params). */
  params: Record<string, unknown>;
  options: StageActivityOptions;
  /** sample and score only; absent or 1 = one activity (the command sequence of unsharded runs). */
  shards?: ShardSetting;
}

/** What the workflow receives: validated, defaulted and resolved by the CLI. */
export interface RunPlan {
  runId: string;
  runDir: string;
  seed: number;
  iterations: number;
  configHash: string;
  stages: StageName[];
  stagePlans: Record<StageName, StagePlan>;
  /** Inputs that do not come from an earlier stage. `policy` is the iteration-0 policy when it is a local folder. */
  staticInputs: Partial<Record<'prompts' | 'guidance' | 'evalData' | 'policy', InputRef>>;
  /** evaluate against the iteration-0 policy's answers (the embedded default) instead of official baseline answers. */
  evaluateAgainstBasePolicy: boolean;
  queues: RunQueues;
}

/** Where an execution of the run's workflow starts; continue-as-new carries it to the next execution. */
export interface RunResumePoint {
  iteration: number;
  /** The policy this iteration samples from (the previous iteration's trained model). */
  policy?: InputRef;
  /** Stages of this iteration already finished (when Temporal suggested continuing mid-iteration). */
  done?: Partial<Record<StageName, StageResult>>;
}

/** Control requests a running run has accepted (carried across continue-as-new; shown by `status`). */
export interface RunControl {
  /** Hold before the next stage starts (the running stage goes on). */
  paused: boolean;
  /** The iteration count now in force (set-iterations, stop-after-iteration). */
  iterations: number;
  /** Stages to skip when reached, as "k:stage". */
  skip: string[];
}

/** The workflow's second argument: how to run, not what (that is the plan). */
export interface RunOptions {
  from?: RunResumePoint;
  control?: Omit<RunControl, 'iterations'>;
  /** false on clusters where ratioloop's search attributes are not registered: the workflow never upserts them. */
  searchAttributes?: boolean;
}

export interface StageRequest {
  runId: string;
  runDir: string;
  iteration: number;
  stage: StageName;
  seed: number;
  params: Record<string, unknown>;
  inputs: Record<string, InputRef>;
  /** Build id of the workflow bundle that scheduled this stage (recorded in the attempt's worker record). */
  workflowBuildId?: string;
  /** StageActivityOptions.maxFailures, enforced by the activity (Temporal's attempt count cannot tell a crash from a preemption). */
  maxFailures?: number;
  /** From the plan's stage options: the stall watchdog's limit; 0 or absent (older workflows): no watchdog. */
  stallTimeoutMs?: number;
  /** One shard of a sharded stage: its own folder (shard-000i-of-000K) and `params.shard` in its spec. */
  shard?: ShardRef;
  /** One machine rank of a multi-node training gang (workflows/gang.ts); its rendezvous is in `env`, never the spec. */
  gang?: GangRankRef;
}

export interface GangRankRef {
  rank: number;
  machines: number;
  /** The gang's attempt (each rank activity runs once; the gang is what is retried): names the attempt's logs. */
  attempt: number;
  /** RATIOLOOP_MACHINE_RANK and rank 0's RATIOLOOP_MAIN_PROCESS_IP/_PORT, for the stage process. */
  env: Record<string, string>;
  /** Only the done-check, before any machine is claimed: a finished stage answers skipped, any other `skipped: false`. */
  probe?: boolean;
}

export interface ShardRef {
  index: number;
  count: number;
}

/** The merge of a sharded stage: the stage's request (its unsharded spec) plus every shard's result, in index order. */
export interface MergeRequest extends StageRequest {
  shards: StageResult[];
}

/** What `shards: auto` decided, and from what (undefined = not knowable there). */
export interface ShardPlanResult {
  count: number;
  prompts?: number;
  workers?: number;
}

export interface StageResult {
  stage: StageName;
  iteration: number;
  outputs: Record<string, OutputRef>;
  metrics: Record<string, unknown>;
  /** true when a matching manifest proved the stage done and no process ran. */
  skipped: boolean;
  durationMs: number;
}

export type StageState = 'pending' | 'running' | 'done' | 'skipped' | 'failed' | 'cancelled';

export interface StageStatus {
  iteration: number;
  stage: StageName;
  queue: QueueKind;
  status: StageState;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  error?: string;
  metrics?: Record<string, unknown>;
  /** Why a stage has this status when it is not the usual reason (e.g. skipped on request). */
  note?: string;
}

export type RunState = 'running' | 'completed' | 'failed' | 'cancelled';

export interface RunProgress {
  runId: string;
  status: RunState;
  iteration: number;
  iterations: number;
  /** The current iteration's stages (earlier iterations are in run.json: workflow state stays bounded). */
  stages: StageStatus[];
  error?: string;
  control?: RunControl;
  /** True while held at a stage boundary by `pause`. */
  waiting?: boolean;
}

/** Live progress of a running stage, carried in activity heartbeats. */
export interface StageHeartbeat {
  stage: StageName;
  iteration: number;
  done: number;
  total: number;
  unit: string;
  startedAtMs: number;
  updatedAtMs: number;
  /** What the activity is doing; done/total count files while hashing. Absent from older workers. */
  phase?: StagePhase;
  phaseStartedAtMs?: number;
  /** The stage program's own named step while it reports no counts (e.g. "loading the policy model"). */
  step?: string;
  stepStartedAtMs?: number;
  /** Units per second of the current count, measured from its first progress line (so loading time is left out). */
  rate?: number;
  /** When the stage program last printed a protocol line (progress, phase, alive). */
  lastLineAtMs?: number;
  attempt?: number;
  /** The shard this beat is from (a sharded stage's shards each keep their own). */
  shard?: ShardRef;
  /** Set when `status` summed several shards into this one line: how many. */
  shards?: number;
}

export type StagePhase = 'hashing inputs' | 'checking manifest' | 'waiting for lease' | 'waiting for a GPU slot' | 'waiting for machine rank 0' | 'running' | 'verifying';
