// One owner per stage folder, without flock (Lustre mounts default to noflock, NFS can be mounted nolock). The lease
// is a folder of numbered generation files, <stage>/.lease/<generation>.json; the highest generation is the owner.
// A taker creates generation n+1 by link(2) of a complete temp file, which is atomic on local filesystems, NFS and
// Lustre: of many takers exactly one creates n+1. It takes over generation n only when n was released or expired by
// more than a clock-skew margin. The owner renews its own file (rename of a temp file) and, before each renewal,
// checks that no higher generation exists; the generation is also the fencing token the stage process checks
// (scripts/ratioloop_py/lease.py is the Python twin). docs/architecture.md, "Stage-folder ownership".
import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export const LEASE_DIR = '.lease';
const GEN_RE = /^(\d{12})\.json$/;
const genFile = (dir: string, gen: number): string => path.join(dir, `${String(gen).padStart(12, '0')}.json`);

export interface LeaseOwner {
  host: string;
  pid: number;
  /** Temporal attempt number and ids, for people reading the record. */
  attempt?: number;
  activityId?: string;
  workflowRunId?: string;
  /** Random per acquisition: two acquisitions by the same process differ. */
  token: string;
}

export interface LeaseRecord {
  version: 1;
  generation: number;
  owner: LeaseOwner;
  takenAt: string;
  renewedAt: string;
  /** Owner's clock, ms since the epoch. Readers allow `skewMs` on top (clocks of two hosts differ). */
  expiresAtMs: number;
  ttlMs: number;
  released?: boolean;
  /** The generation this one took over, and its owner, when it was not released. */
  tookOver?: { generation: number; owner: LeaseOwner; expiresAtMs: number };
}

export interface LeaseTiming {
  /** How long a renewal holds. */
  ttlMs: number;
  /** Allowed difference between hosts' clocks: a lease is stale only this long after it expired. */
  skewMs: number;
}

const envMs = (name: string, fallback: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v * 1000 : fallback;
};

/**
 * Defaults: ttl half the attempt's heartbeat timeout, within 5-30 s, so a dead worker's lease is stale about when
 * Temporal retries its stage (after the heartbeat timeout) plus the 30 s skew margin at most.
 */
export const defaultTiming = (heartbeatTimeoutMs?: number): LeaseTiming => ({
  ttlMs: envMs('RATIOLOOP_LEASE_TTL_S', heartbeatTimeoutMs ? Math.min(30_000, Math.max(5_000, heartbeatTimeoutMs / 2)) : 30_000),
  skewMs: envMs('RATIOLOOP_LEASE_SKEW_S', 30_000),
});

export class LeaseHeldError extends Error {
  constructor(readonly holder: LeaseRecord, stageDir: string) {
    const o = holder.owner;
    super(`${stageDir} is owned by another attempt (host ${o.host}, pid ${o.pid}${o.attempt ? `, attempt ${o.attempt}` : ''}; lease generation ${holder.generation} renewed ${holder.renewedAt}, expires ${new Date(holder.expiresAtMs).toISOString()})`);
    this.name = 'LeaseHeldError';
  }
}

export class LeaseLostError extends Error {
  constructor(readonly by: LeaseRecord | undefined, stageDir: string) {
    const o = by?.owner;
    super(`lost the lease on ${stageDir}${o ? ` to host ${o.host}, pid ${o.pid}${o.attempt ? `, attempt ${o.attempt}` : ''} (generation ${by?.generation})` : ''}`);
    this.name = 'LeaseLostError';
  }
}

async function generations(dir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.flatMap((n) => {
    const m = GEN_RE.exec(n);
    return m ? [Number(m[1])] : [];
  }).sort((a, b) => a - b);
}

async function readRecord(dir: string, gen: number): Promise<LeaseRecord | undefined> {
  const file = genFile(dir, gen);
  try {
    return JSON.parse(await readFile(file, 'utf8')) as LeaseRecord;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // Unreadable (a foreign or damaged file): it holds until its mtime plus the default ttl.
    const s = await stat(file).catch(() => undefined);
    const owner: LeaseOwner = { host: '?', pid: 0, token: '?' };
    const t = s?.mtimeMs ?? 0;
    return { version: 1, generation: gen, owner, takenAt: new Date(t).toISOString(), renewedAt: new Date(t).toISOString(), expiresAtMs: t + defaultTiming().ttlMs, ttlMs: defaultTiming().ttlMs };
  }
}

/** The current owner's record (the highest generation), or undefined when the folder was never leased. */
export async function currentLease(stageDir: string): Promise<LeaseRecord | undefined> {
  const dir = path.join(stageDir, LEASE_DIR);
  const gens = await generations(dir);
  const top = gens.at(-1);
  return top === undefined ? undefined : readRecord(dir, top);
}

/** Whether a taker may take over `rec` now: released, or expired by more than the skew margin (on the taker's clock). */
export const isStale = (rec: LeaseRecord, nowMs: number, skewMs: number): boolean => rec.released === true || nowMs > rec.expiresAtMs + skewMs;

async function writeAtomic(file: string, rec: LeaseRecord): Promise<void> {
  const tmp = path.join(path.dirname(file), `.tmp-${rec.owner.token}-${randomBytes(4).toString('hex')}`);
  await writeFile(tmp, JSON.stringify(rec, null, 2) + '\n');
  await rename(tmp, file);
}

export class StageLease {
  private lost = false;

  constructor(readonly stageDir: string, private rec: LeaseRecord, private readonly timing: LeaseTiming, private readonly now: () => number) {}

  get generation(): number {
    return this.rec.generation;
  }
  get token(): string {
    return this.rec.owner.token;
  }
  get record(): LeaseRecord {
    return this.rec;
  }
  /** The lease record this one replaced without a release (someone else may have been writing here). */
  get tookOver(): LeaseRecord['tookOver'] {
    return this.rec.tookOver;
  }
  private get dir(): string {
    return path.join(this.stageDir, LEASE_DIR);
  }

  /** undefined while this lease is the highest generation with our token; else the record that replaced it. */
  async supersededBy(): Promise<LeaseRecord | undefined | 'gone'> {
    const top = (await generations(this.dir)).at(-1);
    if (top === this.rec.generation) {
      const r = await readRecord(this.dir, top);
      return r?.owner.token === this.token ? undefined : (r ?? 'gone');
    }
    if (top === undefined || top < this.rec.generation) return 'gone'; // someone removed the lease folder
    return (await readRecord(this.dir, top)) ?? 'gone';
  }

  async holds(): Promise<boolean> {
    return !this.lost && (await this.supersededBy()) === undefined;
  }

  /** Extend the lease; throws LeaseLostError when a higher generation exists (the caller must stop writing). */
  async renew(): Promise<void> {
    if (this.lost) throw new LeaseLostError(undefined, this.stageDir);
    const by = await this.supersededBy();
    if (by !== undefined) {
      this.lost = true;
      throw new LeaseLostError(by === 'gone' ? undefined : by, this.stageDir);
    }
    const now = this.now();
    const next: LeaseRecord = { ...this.rec, renewedAt: new Date(now).toISOString(), expiresAtMs: now + this.timing.ttlMs };
    await writeAtomic(genFile(this.dir, this.rec.generation), next);
    this.rec = next;
  }

  /** Give the folder up at once (the next taker need not wait); a no-op when the lease was already lost. */
  async release(): Promise<void> {
    if (this.lost || (await this.supersededBy()) !== undefined) return;
    const now = this.now();
    await writeAtomic(genFile(this.dir, this.rec.generation), { ...this.rec, released: true, renewedAt: new Date(now).toISOString(), expiresAtMs: now });
    this.lost = true;
  }

  /** What the stage process needs to check the lease itself (scripts/ratioloop_py/lease.py). */
  env(checkEveryMs: number): Record<string, string> {
    return { RATIOLOOP_LEASE_DIR: this.dir, RATIOLOOP_LEASE_GENERATION: String(this.generation), RATIOLOOP_LEASE_TOKEN: this.token, RATIOLOOP_LEASE_CHECK_S: String(checkEveryMs / 1000) };
  }
}

export function newOwner(extra: Omit<LeaseOwner, 'host' | 'pid' | 'token'> = {}): LeaseOwner {
  return { host: os.hostname(), pid: process.pid, ...extra, token: randomBytes(8).toString('hex') };
}

/**
 * One try: the lease when the folder was free, released or stale; else the live holder. Safe against any number of
 * concurrent takers on any number of hosts: only the creator of the next generation file wins, and a winner that finds
 * a still higher generation after creating its own (it raced past a cleanup) gives it back.
 */
export async function tryAcquire(stageDir: string, owner: LeaseOwner, timing: LeaseTiming = defaultTiming(), now: () => number = Date.now): Promise<StageLease | LeaseHeldError> {
  const dir = path.join(stageDir, LEASE_DIR);
  await mkdir(dir, { recursive: true });
  for (;;) {
    const top = (await generations(dir)).at(-1);
    const prev = top === undefined ? undefined : await readRecord(dir, top);
    if (top !== undefined && !prev) continue; // the top file vanished between listing and reading: look again
    if (prev && !isStale(prev, now(), timing.skewMs)) return new LeaseHeldError(prev, stageDir);
    const gen = (top ?? 0) + 1;
    const t = now();
    const rec: LeaseRecord = {
      version: 1, generation: gen, owner, takenAt: new Date(t).toISOString(), renewedAt: new Date(t).toISOString(), expiresAtMs: t + timing.ttlMs, ttlMs: timing.ttlMs,
      ...(prev && !prev.released ? { tookOver: { generation: prev.generation, owner: prev.owner, expiresAtMs: prev.expiresAtMs } } : {}),
    };
    const tmp = path.join(dir, `.tmp-${owner.token}-${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2) + '\n');
    let created = false;
    try {
      await link(tmp, genFile(dir, gen));
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        await unlink(tmp).catch(() => undefined);
        throw e;
      }
    }
    await unlink(tmp).catch(() => undefined);
    if (!created) continue; // another taker created this generation first: judge its lease
    const lease = new StageLease(stageDir, rec, timing, now);
    if ((await lease.supersededBy()) !== undefined) {
      await unlink(genFile(dir, gen)).catch(() => undefined); // not the highest: ours never counted
      continue;
    }
    // Older generations are history; the highest is never removed, so generations only grow.
    for (const g of await generations(dir)) if (g < gen) await unlink(genFile(dir, g)).catch(() => undefined);
    return lease;
  }
}

export interface AcquireOptions {
  timing?: LeaseTiming;
  /** Give up (LeaseHeldError) when a live holder keeps renewing this long. */
  waitMs: number;
  pollMs?: number;
  now?: () => number;
  /** Called once when the first try finds a live holder (to show "waiting for the stage lease"). */
  onWait?: (holder: LeaseRecord) => void;
  signal?: AbortSignal;
}

/** Take the lease, waiting while a holder's lease is live (a dead worker's lease goes stale after ttl + skew). */
export async function acquireLease(stageDir: string, owner: LeaseOwner, opts: AcquireOptions): Promise<StageLease> {
  const now = opts.now ?? Date.now;
  const until = now() + opts.waitMs;
  let waited = false;
  for (;;) {
    const got = await tryAcquire(stageDir, owner, opts.timing, now);
    if (got instanceof StageLease) return got;
    if (now() >= until || opts.signal?.aborted) throw got;
    if (!waited) opts.onWait?.(got.holder);
    waited = true;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1_000));
  }
}

/**
 * Renew every `renewMs` until stopped. `onLost` is called once when a higher generation appears, or when renewals have
 * failed (storage unreachable) until our own lease ran out: either way this owner can no longer prove it owns the folder.
 */
export function keepRenewed(lease: StageLease, renewMs: number, onLost: (e: LeaseLostError) => void, now: () => number = Date.now): () => void {
  let stopped = false;
  let busy = false;
  const timer = setInterval(() => {
    if (stopped || busy) return;
    busy = true;
    lease.renew().then(
      () => undefined,
      (e: unknown) => {
        if (stopped) return;
        if (e instanceof LeaseLostError) {
          stopped = true;
          onLost(e);
        } else if (now() > lease.record.expiresAtMs) {
          stopped = true;
          onLost(new LeaseLostError(undefined, `${lease.stageDir} (renewals failing until the lease expired: ${(e as Error).message})`));
        }
      },
    ).finally(() => (busy = false));
  }, renewMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
