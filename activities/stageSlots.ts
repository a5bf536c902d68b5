// A stage attempt's GPU slots: the devices its process is pinned to, taken from the worker's pool (src/gpuSlots.ts)
// after the done-check (a finished stage needs no GPU) and given back when its process has ended.
import os from 'node:os';
import { ApplicationFailure, CancelledFailure } from '@temporalio/activity';
import type { StageRequest } from '../workflows/types';
import { SlotError, type GpuSlotPool, type SlotLease } from '../src/gpuSlots';
import { stageGpus } from '../src/queues';

export interface StageSlotOptions {
  pool: GpuSlotPool;
  /** The task came through the gpu queue's poll gate (src/gpuPollGate.ts), which counted one slot for it. */
  viaPermit: boolean;
  signal: AbortSignal;
  /** Called once when the slots are not free at once (the attempt shows "waiting for a GPU slot"). */
  onWait: (need: number, free: number) => void;
}

export async function takeStageSlots(req: StageRequest, o: StageSlotOptions): Promise<SlotLease> {
  const k = stageGpus(req.stage, req.params);
  const need = o.pool.need(k);
  if (need > o.pool.free() || o.pool.waiting() > 0) o.onWait(need, o.pool.free());
  try {
    return await o.pool.acquire(k, { signal: o.signal, viaPermit: o.viaPermit });
  } catch (e) {
    if (o.signal.aborted) throw new CancelledFailure(`${req.stage} cancelled while waiting for GPU slots`);
    // Retryable: the task queue's other workers may have more slots (a plan from before resource classes, say).
    if (e instanceof SlotError) throw ApplicationFailure.create({ message: `${req.stage} (iteration ${req.iteration}) ${e.message} on host ${os.hostname()}`, type: 'WorkerEnvironment', details: [{ host: os.hostname() }] });
    throw e;
  }
}

/**
 * The stage process's environment additions: with a pinning pool, CUDA_VISIBLE_DEVICES names its devices (empty, so it
 * sees none, for a stage that needs no GPU); a whole-machine pool leaves the worker's own setting.
 */
export function slotEnv(pool: GpuSlotPool | undefined, lease: SlotLease | undefined): Record<string, string> {
  return pool?.pinned && lease ? { CUDA_VISIBLE_DEVICES: lease.devices.join(',') } : {};
}
