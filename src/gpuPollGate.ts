// The gpu queue's poll gate: a Temporal slot supplier that lets this worker ask for a one-GPU task only while one of its
// GPU slots is free and not promised to a stage already waiting. A machine whose devices are busy leaves the queue's
// tasks (shards) to machines that can start them now, instead of taking them and making them wait.
// Each permit counts one slot from the moment the poll starts until Temporal releases it (task done, or a poll that
// came back empty); the stage's process takes its actual device(s) from the pool (gpuSlots.ts), so counts, not
// device ids, link the two.
import type { ActivitySlotInfo, CustomSlotSupplier, SlotPermit } from '@temporalio/worker';
import type { GpuSlotPool } from './gpuSlots';

interface Permit extends SlotPermit {
  open: boolean;
}

export function gpuPollGate(pool: GpuSlotPool): CustomSlotSupplier<ActivitySlotInfo> {
  let permits = 0;
  const waiting = new Set<() => void>();
  const fits = (): boolean => permits + pool.committedBeyondPermits() < pool.size;
  const wake = (): void => {
    for (const w of [...waiting]) w();
  };
  pool.onChange(wake);
  const issue = (): Permit => {
    permits++;
    return { open: true };
  };
  const close = (p: SlotPermit): void => {
    const permit = p as Permit;
    if (!permit.open) return;
    permit.open = false;
    permits--;
    wake();
  };
  return {
    type: 'custom',
    reserveSlot(_ctx, abortSignal) {
      return new Promise<SlotPermit>((resolve, reject) => {
        const check = (): void => {
          if (!fits()) return;
          waiting.delete(check);
          abortSignal.removeEventListener('abort', onAbort);
          resolve(issue());
        };
        const onAbort = (): void => {
          waiting.delete(check);
          reject(abortSignal.reason as Error);
        };
        if (abortSignal.aborted) return reject(abortSignal.reason as Error);
        abortSignal.addEventListener('abort', onAbort, { once: true });
        waiting.add(check);
        check();
      });
    },
    tryReserveSlot() {
      return fits() ? issue() : null;
    },
    markSlotUsed() {
      // The permit keeps counting one slot while its stage runs (or waits for its devices).
    },
    releaseSlot(ctx) {
      close(ctx.permit);
    },
  };
}
