// Workers: the control queue runs the workflow and bookkeeping; the cpu and gpu queues run stages. One process may serve
// any subset, so many machines can serve one run (e.g. `ratioloop worker --queues gpu` on each GPU box). The gpu role
// also serves the resource-class queues (gpu-x2, gpu-x4, …) of stages that need several GPUs on one machine; with GPU
// slots (--gpus / --gpu-slots) every stage process is pinned to its own devices (src/gpuSlots.ts).
import { DefaultLogger, Runtime, Worker, type Logger, type LogLevel, type WorkerOptions } from '@temporalio/worker';
import { createControlActivities, createShardActivities, createStageActivities, type StageDeps } from '../activities';
import { pollersVia } from '../activities/planShards';
import { projectRoot, pythonPath, scriptsDir } from './paths';
import { connectWorker, type TemporalSettings } from './temporal';
import { GpuSlotPool } from './gpuSlots';
import { gpuPollGate } from './gpuPollGate';
import { classesOf, classesUpTo, classSize, hostQueueName, machineName, queueNames } from './queues';
import { createGangActivities } from '../activities/gangClaim';
import type { GpuClass, RunQueues } from '../workflows/types';
import { buildWorkflowBundle, loadWorkflowBundle, type BuiltBundle } from './workflowBundle';

export type QueueRole = 'control' | 'cpu' | 'gpu';
export const QUEUE_ROLES: readonly QueueRole[] = ['control', 'cpu', 'gpu'];
/** Classes a whole-machine worker (no slot flags) serves when nothing names them: it runs one stage at a time anyway. */
const WHOLE_MACHINE_CLASSES: readonly GpuClass[] = classesUpTo(8);

const FIXED = { type: 'fixed-size', numSlots: 1 } as const;

let runtimeInstalled = false;
// The commands handle SIGINT/SIGTERM themselves (run: Ctrl-C leaves the run resumable or, with --cancel-on-interrupt,
// serves it until the cancellation is recorded; worker: a clean stop). The SDK's default would shut every worker down
// at the first Ctrl-C, so nobody would record that cancellation.
const shutdownSignals: NodeJS.Signals[] = [];
function installRuntime(logger?: Logger): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  if (logger) {
    // Core's own (Rust) lines are forwarded to the same logger, so nothing of the SDK reaches the terminal directly.
    Runtime.install({ logger, shutdownSignals, telemetryOptions: { logging: { forward: {}, filter: { core: 'WARN', other: 'WARN' } } } });
    return;
  }
  const level = (process.env.TEMPORAL_SDK_LOG_LEVEL ?? 'WARN') as LogLevel;
  Runtime.install({ logger: new DefaultLogger(level), shutdownSignals });
}

/**
 * Send the SDK's and workers' logs to `logger` (the CLI's log file) instead of the console. Call before the first
 * worker starts; false when the runtime was already installed (its logger cannot change then).
 */
export function routeSdkLogs(logger: Logger): boolean {
  if (runtimeInstalled) return false;
  installRuntime(logger);
  return true;
}

const bundles = new Map<string, Promise<BuiltBundle>>();
/** The workflow bundle: a prebuilt file (`ratioloop bundle`), else built from this checkout once per process. */
export function workflowBundle(file?: string): Promise<BuiltBundle> {
  const key = file ?? '';
  let b = bundles.get(key);
  if (!b) {
    b = file ? loadWorkflowBundle(file) : buildWorkflowBundle();
    bundles.set(key, b);
    b.catch(() => bundles.delete(key));
  }
  return b;
}

export interface WorkerSetOptions {
  settings: TemporalSettings;
  roles: readonly QueueRole[];
  /** Queue names (a plan's, with the classes it uses); unset roles get the prefixed default names. */
  queues?: Partial<RunQueues>;
  /** Prefix for names `queues` does not give (default: $RATIOLOOP_QUEUE_PREFIX, else ratioloop-<user>). */
  queuePrefix?: string;
  /** Resource classes the gpu role serves; default: the ones `queues` names (none if it names none), else every class the slots can hold. */
  gpuClasses?: readonly GpuClass[];
  /** GPU slots (--gpus / --gpu-slots): one stage per device, pinned. Unset: the whole machine, gpuConcurrency at a time. */
  gpuSlots?: GpuSlotPool;
  stageDeps?: Partial<StageDeps>;
  /** Also poll this machine's own queue (`<gpu>-host-<hostname>`): where a gang's rank for this machine is sent. */
  hostQueue?: boolean;
  /** This machine's name for its host queue and claims (default $RATIOLOOP_HOSTNAME, else the host name). */
  hostname?: string;
  /** Stages a gpu worker without slots runs at once (default 1: one accelerator job at a time). */
  gpuConcurrency?: number;
  cpuConcurrency?: number;
  /** A prebuilt workflow bundle file (default: $RATIOLOOP_WORKFLOW_BUNDLE, else build from this checkout). */
  bundleFile?: string;
}

export interface WorkerSet {
  /** Build id of the workflow bundle, when this set serves the control queue. */
  buildId?: string;
  /** The task queues polled, by kind. */
  polled: Partial<RunQueues>;
  /** Classes the gpu role was asked for but cannot serve (more GPUs than its slots). */
  unservable: GpuClass[];
  /** This machine's own queue, when polled. */
  hostQueue?: string;
  /** Resolves when every worker has stopped. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

export async function startWorkers(opts: WorkerSetOptions): Promise<WorkerSet> {
  installRuntime();
  const connection = await connectWorker(opts.settings);
  const named = opts.queues ?? {};
  // Given queues (a plan's) name the classes the run uses, none when it needs none; a bare worker serves what it can hold.
  const wanted = opts.gpuClasses ?? (opts.queues ? classesOf(named) : opts.gpuSlots ? classesUpTo(opts.gpuSlots.size) : WHOLE_MACHINE_CLASSES);
  const queues: RunQueues = queueNames({ prefix: opts.queuePrefix, explicit: named, classes: wanted });
  for (const c of classesOf(named)) queues[c] = named[c]!; // a plan's class names as recorded
  // A whole-machine worker takes any class (it runs one stage at a time, seeing every device); slots hold at most their count.
  const pool = opts.gpuSlots ?? GpuSlotPool.wholeMachine(opts.gpuConcurrency ?? 1);
  const classes = wanted.filter((c) => !pool.pinned || classSize(c) <= pool.size);
  const unservable = wanted.filter((c) => !classes.includes(c));
  const deps: StageDeps = { python: pythonPath(), scriptsDir, cwd: projectRoot, ...opts.stageDeps };
  const workers: Worker[] = [];
  const polled: Partial<RunQueues> = {};
  let buildId: string | undefined;
  const hostname = opts.hostname ?? machineName();
  const hostQueue = hostQueueName(queues.gpu, hostname);
  const stageWorker = (taskQueue: string, stageDeps: StageDeps, limits: Pick<WorkerOptions, 'maxConcurrentActivityTaskExecutions' | 'tuner' | 'maxConcurrentActivityTaskPolls'>) =>
    Worker.create({
      connection,
      namespace: opts.settings.namespace,
      taskQueue,
      // The merge runs on the cpu queue; a gang's claim on the gpu and class queues.
      activities: { ...createStageActivities(stageDeps), ...createShardActivities(stageDeps), ...(stageDeps.slots ? createGangActivities(hostQueue, process.env.RATIOLOOP_GANG_ADDRESS || hostname, hostname) : {}) },
      ...limits,
      // shutdownGraceTime is how long in-flight stages keep running after shutdown starts, before they are
      // cancelled: none (a stopped worker's stage runs again from its checkpoint on the next worker). Cancelling
      // kills the stage's process group (killGraceMs) and reports back; shutdownForceTime bounds that wait.
      shutdownGraceTime: 0,
      shutdownForceTime: '60s',
      // A cancel reaches a running stage with the next heartbeat sent to the server. The SDK's default spacing is 80% of
      // the heartbeat timeout, up to 60 s: a cancelled run would wait that long for its stage to be stopped.
      maxHeartbeatThrottleInterval: '5s',
    });
  for (const role of opts.roles) {
    if (role === 'control') {
      const bundle = await workflowBundle(opts.bundleFile ?? (process.env.RATIOLOOP_WORKFLOW_BUNDLE || undefined));
      buildId = bundle.buildId;
      workers.push(
        await Worker.create({
          connection,
          namespace: opts.settings.namespace,
          taskQueue: queues.control,
          workflowBundle: { code: bundle.code },
          activities: createControlActivities({ buildId, pollers: pollersVia(connection.workflowService, opts.settings.namespace) }),
        }),
      );
      polled.control = queues.control;
    } else if (role === 'cpu') {
      workers.push(await stageWorker(queues.cpu, deps, { maxConcurrentActivityTaskExecutions: opts.cpuConcurrency ?? 2 }));
      polled.cpu = queues.cpu;
    } else {
      // One-GPU stages: with slots, the poll gate asks for a task only while a slot is free (src/gpuPollGate.ts).
      const gpuLimits = pool.pinned
        ? { tuner: { activityTaskSlotSupplier: gpuPollGate(pool), workflowTaskSlotSupplier: FIXED, localActivityTaskSlotSupplier: FIXED, nexusTaskSlotSupplier: FIXED }, maxConcurrentActivityTaskPolls: 1 }
        : { maxConcurrentActivityTaskExecutions: pool.size };
      workers.push(await stageWorker(queues.gpu, { ...deps, slots: pool, viaPermit: pool.pinned }, gpuLimits));
      polled.gpu = queues.gpu;
      // Resource classes: as many at once as the slots could hold; each takes its devices first come, first served.
      for (const c of classes) {
        const at = pool.pinned ? Math.max(1, Math.floor(pool.size / classSize(c))) : pool.size;
        workers.push(await stageWorker(queues[c]!, { ...deps, slots: pool }, { maxConcurrentActivityTaskExecutions: at }));
        polled[c] = queues[c]!;
      }
      if (opts.hostQueue) {
        workers.push(await stageWorker(hostQueue, { ...deps, slots: pool }, { maxConcurrentActivityTaskExecutions: pool.size }));
      }
    }
  }
  const done = Promise.all(workers.map((w) => w.run())).then(async () => {
    await connection.close();
  });
  return {
    ...(buildId ? { buildId } : {}),
    polled,
    unservable,
    ...(opts.hostQueue && opts.roles.includes('gpu') ? { hostQueue } : {}),
    done,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done;
    },
  };
}
