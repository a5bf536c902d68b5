// A stage worker that takes a stage and then behaves as if its machine died: it never heartbeats and never answers,
// so only the heartbeat timeout ends the attempt (test/retry.test.ts and the replay recorder's dead-worker cancel).
import { NativeConnection, Worker } from '@temporalio/worker';
import type { StageRequest, StageResult } from '../workflows/types';

export interface DeadWorker {
  /** Resolves when the worker has taken a stage. */
  taken: Promise<StageRequest>;
  shutdown(): Promise<void>;
}

export async function startDeadStageWorker(address: string, taskQueue: string, namespace = 'default'): Promise<DeadWorker> {
  const connection = await NativeConnection.connect({ address });
  let take: (r: StageRequest) => void = () => undefined;
  const taken = new Promise<StageRequest>((resolve) => (take = resolve));
  const gone = new AbortController();
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue,
    activities: {
      runStage: async (req: StageRequest): Promise<StageResult> => {
        take(req);
        // No heartbeat, no cancellation check: a dead machine. Ends when the test shuts the worker down.
        await new Promise((resolve) => gone.signal.addEventListener('abort', resolve, { once: true }));
        throw new Error('dead worker shut down');
      },
    },
    shutdownGraceTime: '1s',
  });
  const running = worker.run();
  return {
    taken,
    shutdown: async () => {
      gone.abort();
      worker.shutdown();
      await running;
      await connection.close();
    },
  };
}
