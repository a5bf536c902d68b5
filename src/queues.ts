// Task queue names, and the GPU resource class of a stage. Names are prefixed per user (or per project, with
// queues.prefix) so that two users of one namespace never take each other's tasks; a stage that needs k > 1 GPUs on one
// machine goes to a resource-class queue (`<gpu>-x<c>`, c = k rounded up to a power of two) that only workers with at
// least c GPU slots poll. The CLI, the plan and the workers all take their names from here, so they agree.
import os from 'node:os';
import type { GpuClass, QueueKind, RunQueues, StageName } from '../workflows/types';

export class QueueNameError extends Error {}

const QUEUE_CHARS = /^[A-Za-z0-9._-]{1,200}$/;
/** Class sizes go up to this (a machine with more GPUs serves its largest power-of-two class). */
export const MAX_CLASS_SIZE = 64;

function userName(env: NodeJS.ProcessEnv): string {
  let name = env.USER || env.USERNAME || env.LOGNAME;
  if (!name) {
    try {
      name = os.userInfo().username;
    } catch {
      name = undefined; // no passwd entry (some containers)
    }
  }
  // Queue names allow letters, digits, ".", "_" and "-": anything else in a login name becomes "-".
  const clean = (name ?? '').replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return clean || 'user';
}

/** A prefix as given (a flag or the environment), checked: the class suffix must still fit Temporal's name rules. */
export function checkQueuePrefix(p: string, where: string): string {
  if (!QUEUE_CHARS.test(p) || p.length > 180) throw new QueueNameError(`${where} "${p}": use letters, digits, ".", "_" or "-" (at most 180)`);
  return p;
}

/** $RATIOLOOP_QUEUE_PREFIX, else `ratioloop-<user>`. */
export function defaultQueuePrefix(env: NodeJS.ProcessEnv = process.env): string {
  const p = env.RATIOLOOP_QUEUE_PREFIX;
  if (p !== undefined && p !== '') return checkQueuePrefix(p, 'RATIOLOOP_QUEUE_PREFIX');
  return `ratioloop-${userName(env)}`;
}

export function isGpuClass(q: string): q is GpuClass {
  return /^gpu-x\d+$/.test(q);
}

/** The devices a class holds at most (gpu-x8 → 8). */
export function classSize(c: GpuClass): number {
  return Number(c.slice('gpu-x'.length));
}

/** The queue a stage needing k GPUs goes to: gpu for one, else the smallest power-of-two class that holds k. */
export function gpuQueueFor(k: number): 'gpu' | GpuClass {
  if (k <= 1) return 'gpu';
  let c = 2;
  while (c < k) c *= 2;
  return `gpu-x${c}`;
}

/** The classes a worker with `slots` GPU slots can serve: every power of two from 2 up to slots. */
export function classesUpTo(slots: number): GpuClass[] {
  const out: GpuClass[] = [];
  for (let c = 2; c <= Math.min(slots, MAX_CLASS_SIZE); c *= 2) out.push(`gpu-x${c}`);
  return out;
}

const int = (v: unknown, dflt: number): number => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : dflt);

/**
 * GPUs one attempt of a stage takes on its machine, from its params (the same keys the Python stage reads): data-parallel
 * ranks × vLLM tensor-parallel size for sample, ranks for score, train's processes per machine, one for evaluate.
 * pairs needs none; neither does any stage planned on the cpu queue (the caller passes its queue kind).
 */
export function stageGpus(stage: StageName, params: Record<string, unknown>): number {
  switch (stage) {
    case 'sample':
      // tensor_parallel_size only means something to the vLLM engine; hf ignores it.
      return int(params.num_processes, 1) * (params.backend === 'hf' ? 1 : int(params.tensor_parallel_size, 1));
    case 'score':
      return int(params.num_processes, 1);
    case 'train': {
      const launch = (params.launch ?? {}) as Record<string, unknown>;
      // num_processes is the total over all machines; each machine runs its share.
      return Math.max(1, Math.ceil(int(launch.num_processes, 1) / int(launch.num_machines, 1)));
    }
    case 'evaluate':
      return 1;
    case 'pairs':
      return 0;
  }
}

/** The queue kind a stage is planned on: its kind from queues.stages, and its GPU class when it needs k > 1 GPUs. */
export function stageQueue(kind: 'cpu' | 'gpu', stage: StageName, params: Record<string, unknown>): QueueKind {
  return kind === 'cpu' ? 'cpu' : gpuQueueFor(stageGpus(stage, params));
}

export interface QueueNaming {
  /** queues.prefix of the config; undefined = defaultQueuePrefix(). */
  prefix?: string | null;
  /** Explicit full names (the config's taskQueues): each one wins over the prefix. */
  explicit?: Partial<Record<'control' | 'cpu' | 'gpu', string>>;
  /** Resource classes to name (the ones the plan's stages use, or a worker serves). */
  classes?: readonly GpuClass[];
  env?: NodeJS.ProcessEnv;
}

/** Queue names: `<prefix>-control|cpu|gpu` unless given explicitly, and `<gpu name>-x<c>` for each class. */
export function queueNames(n: QueueNaming = {}): RunQueues {
  const prefix = n.prefix ?? defaultQueuePrefix(n.env);
  const gpu = n.explicit?.gpu ?? `${prefix}-gpu`;
  const out: RunQueues = { control: n.explicit?.control ?? `${prefix}-control`, cpu: n.explicit?.cpu ?? `${prefix}-cpu`, gpu };
  for (const c of n.classes ?? []) out[c] = `${gpu}-x${classSize(c)}`;
  return out;
}

/** This machine's name for its host queue and gang claims: $RATIOLOOP_HOSTNAME (tests pretending to be several hosts,
 * containers whose host name is not stable), else the host name. */
export function machineName(env: NodeJS.ProcessEnv = process.env): string {
  return env.RATIOLOOP_HOSTNAME || os.hostname();
}

/**
 * A worker's own queue (Temporal's worker-specific task queue pattern): work that must run on this machine, such as
 * one machine rank of a gang. Named after the gpu queue, so it shares its prefix.
 */
export function hostQueueName(gpuQueue: string, hostname: string = machineName()): string {
  const host = hostname.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 200 - gpuQueue.length - 6) || 'host';
  return `${gpuQueue}-host-${host}`;
}

/** The classes named in a queue map (a recorded plan's queues), smallest first. */
export function classesOf(queues: Partial<RunQueues>): GpuClass[] {
  return (Object.keys(queues).filter(isGpuClass)).sort((a, b) => classSize(a) - classSize(b));
}
