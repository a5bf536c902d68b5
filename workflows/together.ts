// Activities that succeed or fail as one (a stage's shards, a gang's ranks). Deterministic: workflow code only.
import { CancellationScope } from '@temporalio/workflow';

/** Start them all in a cancellable scope; on the first failure cancel the rest and wait for them (their process groups
 * are killed, so nothing runs on beside a retry), then rethrow that failure. */
export function allOrCancelRest<T>(start: () => Promise<T>[]): Promise<T[]> {
  return CancellationScope.cancellable(async () => {
    const all = start();
    try {
      return await Promise.all(all);
    } catch (err) {
      CancellationScope.current().cancel();
      await Promise.allSettled(all);
      throw err;
    }
  });
}
