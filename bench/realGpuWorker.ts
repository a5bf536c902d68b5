// A gpu-queue worker in a process of its own, serving the REAL stage programs (scripts/*.py), for bench/scaling_real.ts:
//   RATIOLOOP_THREADS=1 node --import tsx bench/realGpuWorker.ts <temporal address> <gpu queue>
// One stage at a time, as a one-device machine. The stage process inherits this process's environment, so
// RATIOLOOP_THREADS sets its torch threads (scripts/ratioloop_py/models.py setup_threads).
// Prints "ready" once polling; SIGTERM shuts it down.
import { startWorkers } from '../src/worker';

const [address, gpu] = process.argv.slice(2);
if (!address || !gpu) throw new Error('usage: realGpuWorker.ts ADDRESS GPU_QUEUE');
// stageDeps left at the defaults: scripts/, the project's .venv python, the project root as cwd.
const ws = await startWorkers({ settings: { address, namespace: 'default' }, roles: ['gpu'], queues: { gpu }, stageDeps: { killGraceMs: 2_000 } });
process.stdout.write('ready\n');
process.once('SIGTERM', () => void ws.shutdown());
await ws.done;
