// Workers: the control queue runs the workflow and bookkeeping; the cpu and gpu queues run stages. One process may serve
// any subset, so many machines can serve one run (e.g. `ratioloop worker --queues gpu` on each GPU box).
import { DefaultLogger, Runtime, Worker, type Logger, type LogLevel } from '@temporalio/worker';
import { createControlActivities, createShardActivities, createStageActivities, type StageDeps } from '../activities';
import { pollersVia } from '../activities/planShards';
import { projectRoot, pythonPath, scriptsDir } from './paths';
import { connectWorker, type TemporalSettings } from './temporal';
import { buildWorkflowBundle, loadWorkflowBundle, type BuiltBundle } from './workflowBundle';

export type QueueRole = 'control' | 'cpu' | 'gpu';
export const QUEUE_ROLES: readonly QueueRole[] = ['control', 'cpu', 'gpu'];
export const DEFAULT_QUEUES: Record<QueueRole, string> = { control: 'ratioloop-control', cpu: 'ratioloop-cpu', gpu: 'ratioloop-gpu' };

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
  queues?: Partial<Record<QueueRole, string>>;
  stageDeps?: Partial<StageDeps>;
  /** Stages a gpu worker runs at once (default 1: one accelerator job at a time). */
  gpuConcurrency?: number;
  cpuConcurrency?: number;
  /** A prebuilt workflow bundle file (default: $RATIOLOOP_WORKFLOW_BUNDLE, else build from this checkout). */
  bundleFile?: string;
}

export interface WorkerSet {
  /** Build id of the workflow bundle, when this set serves the control queue. */
  buildId?: string;
  /** Resolves when every worker has stopped. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

export async function startWorkers(opts: WorkerSetOptions): Promise<WorkerSet> {
  installRuntime();
  const connection = await connectWorker(opts.settings);
  const queues = { ...DEFAULT_QUEUES, ...opts.queues };
  const deps: StageDeps = { python: pythonPath(), scriptsDir, cwd: projectRoot, ...opts.stageDeps };
  const workers: Worker[] = [];
  let buildId: string | undefined;
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
    } else {
      workers.push(
        await Worker.create({
          connection,
          namespace: opts.settings.namespace,
          taskQueue: queues[role],
          activities: { ...createStageActivities(deps), ...createShardActivities(deps) }, // the merge runs on the cpu queue
          maxConcurrentActivityTaskExecutions: role === 'gpu' ? (opts.gpuConcurrency ?? 1) : (opts.cpuConcurrency ?? 2),
          // shutdownGraceTime is how long in-flight stages keep running after shutdown starts, before they are
          // cancelled: none (a stopped worker's stage runs again from its checkpoint on the next worker). Cancelling
          // kills the stage's process group (killGraceMs) and reports back; shutdownForceTime bounds that wait.
          shutdownGraceTime: 0,
          shutdownForceTime: '60s',
          // A cancel reaches a running stage with the next heartbeat sent to the server. The SDK's default spacing is 80% of
          // the heartbeat timeout, up to 60 s: a cancelled run would wait that long for its stage to be stopped.
          maxHeartbeatThrottleInterval: '5s',
        }),
      );
    }
  }
  const done = Promise.all(workers.map((w) => w.run())).then(async () => {
    await connection.close();
  });
  return {
    ...(buildId ? { buildId } : {}),
    done,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done;
    },
  };
}
