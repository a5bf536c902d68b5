// A worker's GPU slots: one per device (`--gpus 0,1,…` / `--gpu-slots N`), shared by every stage this worker process
// runs. A stage takes the k devices it needs on this machine before its process starts and gives them back when it ends.
// Strictly first come, first served: a request at the head of the queue waits until its k devices are free, and later
// requests wait behind it, so a k-GPU stage is not starved by a stream of one-GPU stages, and one-GPU stages wait at
// most for the stages ahead of them. Without slot flags the pool is the whole machine: one stage at a time (today's
// default), its process sees every device, nothing is pinned.

export class SlotError extends Error {}

export interface SlotLease {
  /** The devices held (CUDA_VISIBLE_DEVICES values); empty for a whole-machine slot or a stage that needs none. */
  readonly devices: readonly string[];
  release(): void;
}

interface Waiter {
  need: number;
  viaPermit: boolean;
  resolve: (devices: string[]) => void;
}

interface Holder {
  count: number;
  viaPermit: boolean;
}

export class GpuSlotPool {
  private readonly freeSet: string[];
  private readonly waiters: Waiter[] = [];
  private readonly holders = new Set<Holder>();
  private readonly listeners = new Set<() => void>();

  /**
   * @param slots device ids (pinned) or anonymous slot names (whole machine).
   * @param pinned whether a stage's process is confined to its devices (CUDA_VISIBLE_DEVICES).
   */
  constructor(
    readonly slots: readonly string[],
    readonly pinned: boolean,
  ) {
    if (slots.length === 0) throw new SlotError('a slot pool needs at least one slot');
    if (new Set(slots).size !== slots.length) throw new SlotError(`a device is listed twice: ${slots.join(',')}`);
    this.freeSet = [...slots];
  }

  /** One slot for the whole machine (no pinning): `capacity` stages at once, each seeing every device. */
  static wholeMachine(capacity = 1): GpuSlotPool {
    return new GpuSlotPool(Array.from({ length: capacity }, (_, i) => `machine-${i}`), false);
  }

  get size(): number {
    return this.slots.length;
  }

  /** Slots a stage needing k GPUs takes here: k pinned devices, or one whole-machine slot (none for k = 0). */
  need(k: number): number {
    return this.pinned ? k : Math.min(k, 1);
  }

  free(): number {
    return this.freeSet.length;
  }

  /**
   * Slots committed beyond one per poll permit: held or awaited by stages that came without a permit (resource-class
   * queues), and the extra slots of permit stages needing more than one. The gpu queue's poll gate adds its permits.
   */
  committedBeyondPermits(): number {
    let n = 0;
    for (const h of this.holders) n += h.viaPermit ? Math.max(0, h.count - 1) : h.count;
    for (const w of this.waiters) n += w.viaPermit ? Math.max(0, w.need - 1) : w.need;
    return n;
  }

  /** Requests waiting for slots. */
  waiting(): number {
    return this.waiters.length;
  }

  /** Called after every change (a grant, a release, a new waiter): the poll gate re-checks. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Take the slots for a stage needing k GPUs, in arrival order. Rejects at once when this pool can never hold k
   * (another worker may), and when `signal` aborts while waiting (the waiter leaves the queue).
   * @param viaPermit the stage came through the gpu queue's poll gate, which already counted one slot for it.
   */
  acquire(k: number, opts: { signal?: AbortSignal; viaPermit?: boolean } = {}): Promise<SlotLease> {
    const need = this.need(k);
    if (need > this.size) {
      return Promise.reject(new SlotError(`needs ${need} GPU slots on one machine; this worker has ${this.size} (${this.slots.join(',')})`));
    }
    const viaPermit = opts.viaPermit ?? false;
    if (need === 0) return Promise.resolve({ devices: [], release: () => undefined });
    return new Promise<SlotLease>((resolve, reject) => {
      const signal = opts.signal;
      if (signal?.aborted) return reject(signal.reason as Error);
      const holder: Holder = { count: need, viaPermit };
      const waiter: Waiter = {
        need,
        viaPermit,
        resolve: (devices) => {
          signal?.removeEventListener('abort', onAbort);
          this.holders.add(holder);
          let released = false;
          resolve({
            devices: this.pinned ? devices : [],
            release: () => {
              if (released) return;
              released = true;
              this.holders.delete(holder);
              this.freeSet.push(...devices);
              this.freeSet.sort((a, b) => this.slots.indexOf(a) - this.slots.indexOf(b));
              this.grant();
            },
          });
        },
      };
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          this.grant(); // the next one may fit now
        }
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.grant();
    });
  }

  /** Serve waiters from the head while the head fits; never let a later one overtake it. */
  private grant(): void {
    while (this.waiters.length && this.waiters[0]!.need <= this.freeSet.length) {
      const w = this.waiters.shift()!;
      w.resolve(this.freeSet.splice(0, w.need));
    }
    for (const fn of this.listeners) fn();
  }
}

/**
 * The pool `--gpus LIST` / `--gpu-slots N` ask for. --gpus takes device ids as CUDA_VISIBLE_DEVICES takes them (indexes
 * or GPU UUIDs); --gpu-slots N takes the first N of the worker's own CUDA_VISIBLE_DEVICES when it is set (a scheduler's
 * allocation), else 0…N-1. Neither: undefined (the whole machine, one stage at a time).
 */
export function slotPoolFromFlags(flags: { gpus?: string; gpuSlots?: string }, env: NodeJS.ProcessEnv = process.env): GpuSlotPool | undefined {
  if (flags.gpus !== undefined && flags.gpuSlots !== undefined) throw new SlotError('give --gpus or --gpu-slots, not both');
  // An empty CUDA_VISIBLE_DEVICES names no allocation to stay inside: treated as unset.
  const listed = env.CUDA_VISIBLE_DEVICES?.split(',').map((s) => s.trim()).filter(Boolean);
  const visible = listed?.length ? listed : undefined;
  if (flags.gpus !== undefined) {
    const ids = flags.gpus.split(',').map((s) => s.trim());
    if (ids.length === 0 || ids.some((s) => !/^[A-Za-z0-9:_-]+$/.test(s))) throw new SlotError(`--gpus ${flags.gpus}: a comma-separated list of device ids (e.g. 0,1,2,3 or GPU UUIDs)`);
    if (new Set(ids).size !== ids.length) throw new SlotError(`--gpus ${flags.gpus}: a device is listed twice`);
    if (visible) {
      const unseen = ids.filter((d) => !visible.includes(d));
      if (unseen.length) throw new SlotError(`--gpus ${flags.gpus}: ${unseen.join(',')} not in this worker's CUDA_VISIBLE_DEVICES (${visible.join(',')})`);
    }
    return new GpuSlotPool(ids, true);
  }
  if (flags.gpuSlots !== undefined) {
    const n = Number(flags.gpuSlots);
    if (!Number.isInteger(n) || n < 1) throw new SlotError(`--gpu-slots ${flags.gpuSlots}: a whole number of GPUs, at least 1`);
    if (visible && visible.length < n) throw new SlotError(`--gpu-slots ${n}: this worker's CUDA_VISIBLE_DEVICES names only ${visible.length} (${visible.join(',')})`);
    return new GpuSlotPool(visible ? visible.slice(0, n) : Array.from({ length: n }, (_, i) => String(i)), true);
  }
  return undefined;
}
