// Workers: the control queue runs the workflow and bookkeeping; the cpu and gpu queues run stages. One process may serve
// any subset, so many machines can serve one run (e.g. `ratioloop worker --queues gpu` on each GPU box).
import { createRequire } from 'node:module';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundleWithSourceMap, type LogLevel } from '@temporalio/worker';
import { createControlActivities, createStageActivities, type StageDeps } from '../activities';
import { projectRoot, pythonPath, scriptsDir } from './paths';
import { connectWorker, type TemporalSettings } from './temporal';

export type QueueRole = 'control' | 'cpu' | 'gpu';
export const QUEUE_ROLES: readonly QueueRole[] = ['control', 'cpu', 'gpu'];
export const DEFAULT_QUEUES: Record<QueueRole, string> = { control: 'ratioloop-control', cpu: 'ratioloop-cpu', gpu: 'ratioloop-gpu' };

let runtimeInstalled = false;
function installRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = (process.env.TEMPORAL_SDK_LOG_LEVEL ?? 'WARN') as LogLevel;
  Runtime.install({ logger: new DefaultLogger(level) });
}

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** Bundle the workflow code once per process (webpack; a few seconds). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  const require = createRequire(import.meta.url);
  bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('../workflows/index.ts'), logger: new DefaultLogger('WARN') });
  return bundle;
}

export interface WorkerSetOptions {
  settings: TemporalSettings;
  roles: readonly QueueRole[];
  queues?: Partial<Record<QueueRole, string>>;
  stageDeps?: Partial<StageDeps>;
  /** Stages a gpu worker runs at once (default 1: one accelerator job at a time). */
  gpuConcurrency?: number;
  cpuConcurrency?: number;
}

export interface WorkerSet {
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
  for (const role of opts.roles) {
    if (role === 'control') {
      workers.push(
        await Worker.create({
          connection,
          namespace: opts.settings.namespace,
          taskQueue: queues.control,
          workflowBundle: await workflowBundle(),
          activities: createControlActivities(),
        }),
      );
    } else {
      workers.push(
        await Worker.create({
          connection,
          namespace: opts.settings.namespace,
          taskQueue: queues[role],
          activities: createStageActivities(deps),
          maxConcurrentActivityTaskExecutions: role === 'gpu' ? (opts.gpuConcurrency ?? 1) : (opts.cpuConcurrency ?? 2),
          // Give a cancelled stage time to kill its process group before the worker reports back.
          shutdownGraceTime: '30s',
        }),
      );
    }
  }
  const done = Promise.all(workers.map((w) => w.run())).then(async () => {
    await connection.close();
  });
  return {
    done,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done;
    },
  };
}
