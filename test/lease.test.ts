// The stage-folder lease (src/stageLease.ts) on its own: takeover only when stale, one winner among concurrent takers
// (in one process and across processes), renewal, release, and the Python twin reading the same files.
import { execFile } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { acquireLease, currentLease, defaultTiming, keepRenewed, LEASE_DIR, LeaseHeldError, LeaseLostError, newOwner, StageLease, tryAcquire, type LeaseTiming } from '../src/stageLease';
import { projectRoot, pythonPath } from '../src/paths';
import { tmpDir } from './helpers';

const run = promisify(execFile);
const timing: LeaseTiming = { ttlMs: 1_000, skewMs: 500 };

function clock(start = 1_000_000): { now: () => number; set: (t: number) => void } {
  let t = start;
  return { now: () => t, set: (v) => void (t = v) };
}

async function take(dir: string, c = clock(), attempt = 1): Promise<StageLease | LeaseHeldError> {
  return tryAcquire(dir, newOwner({ attempt }), timing, c.now);
}

const lease = (x: StageLease | LeaseHeldError): StageLease => {
  if (!(x instanceof StageLease)) throw x;
  return x;
};

describe('stage lease', () => {
  it('is taken over only when released or expired by more than the skew margin', async () => {
    const dir = await tmpDir();
    const c = clock();
    const a = lease(await take(dir, c, 1));
    expect(a.generation).toBe(1);

    c.set(1_000_000 + 1_000 + 500); // expired, but within the margin another host's clock may be behind by
    const held = await take(dir, c, 2);
    expect(held).toBeInstanceOf(LeaseHeldError);
    expect((held as LeaseHeldError).message).toContain('attempt 1');

    await a.renew(); // renewed at t = +1500: holds until +2500, stale after +3000
    c.set(1_000_000 + 2_900);
    expect(await take(dir, c, 2)).toBeInstanceOf(LeaseHeldError);
    c.set(1_000_000 + 3_001);
    const b = lease(await take(dir, c, 2));
    expect(b.generation).toBe(2);
    expect(b.tookOver?.owner.token).toBe(a.token); // recorded: an unreleased predecessor may have left half-done work

    // The old owner finds out at its next renewal or check, and must stop.
    expect(await a.holds()).toBe(false);
    await expect(a.renew()).rejects.toBeInstanceOf(LeaseLostError);
    expect(await b.holds()).toBe(true);
    expect((await currentLease(dir))?.owner.token).toBe(b.token);
    expect(await readdir(path.join(dir, LEASE_DIR))).toEqual(['000000000002.json']); // generations only grow

    // A release hands the folder over at once, with nothing recorded as taken over; a lost lease cannot be released.
    await a.release();
    expect(await b.holds()).toBe(true);
    await b.release();
    const d = lease(await take(dir, c, 3));
    expect([d.generation, d.tookOver]).toEqual([3, undefined]);
  });

  it('the default ttl follows the heartbeat timeout (a dead worker\'s folder is free about when Temporal retries)', () => {
    expect([defaultTiming(120_000).ttlMs, defaultTiming(20_000).ttlMs, defaultTiming(2_000).ttlMs, defaultTiming().ttlMs]).toEqual([30_000, 10_000, 5_000, 30_000]);
    expect(defaultTiming().skewMs).toBe(30_000);
  });

  it('concurrent takers of a free folder and of a stale lease: exactly one wins each time', async () => {
    for (let round = 0; round < 15; round++) {
      const dir = await tmpDir();
      const c = clock();
      const free = await Promise.all(Array.from({ length: 8 }, (_, i) => take(dir, c, i + 1)));
      const winners = free.filter((x): x is StageLease => x instanceof StageLease);
      expect(winners).toHaveLength(1);
      expect((await currentLease(dir))?.owner.token).toBe(winners[0]!.token);

      c.set(1_000_000 + 10_000); // the winner died: its lease is stale for everyone
      const stale = await Promise.all(Array.from({ length: 8 }, (_, i) => take(dir, c, i + 10)));
      const next = stale.filter((x): x is StageLease => x instanceof StageLease);
      expect(next).toHaveLength(1);
      expect(next[0]!.generation).toBe(2);
      expect(await next[0]!.holds()).toBe(true);
      expect(await winners[0]!.holds()).toBe(false);
    }
  });

  it('concurrent takers in separate processes: exactly one wins', async () => {
    const dir = await tmpDir();
    const go = path.join(dir, 'go');
    const takers = Array.from({ length: 4 }, () =>
      run(process.execPath, ['--import', 'tsx', path.join(projectRoot, 'test', 'fixtures', 'leaseTaker.ts'), dir, go], { cwd: projectRoot }));
    // Start them together: once every process has loaded and waits for the go file.
    while ((await readdir(dir)).filter((n) => n.endsWith('.ready')).length < 4) await new Promise((r) => setTimeout(r, 20));
    await writeFile(go, '');
    const outs = (await Promise.all(takers)).map((r) => r.stdout.trim());
    const won = outs.filter((o) => o.startsWith('won'));
    expect(won).toHaveLength(1);
    expect(outs.filter((o) => o === 'held')).toHaveLength(3);
    expect((await currentLease(dir))?.owner.token).toBe(won[0]!.split(' ')[2]);
  });

  it('acquireLease waits while the holder is live, then gives up naming it; a dead holder is taken over', async () => {
    const dir = await tmpDir();
    const holder = lease(await tryAcquire(dir, newOwner({ attempt: 1 }), { ttlMs: 400, skewMs: 100 }));
    const stopRenewing = keepRenewed(holder, 100, () => undefined);
    let waits = 0;
    const t0 = Date.now();
    const err = await acquireLease(dir, newOwner({ attempt: 2 }), { timing: { ttlMs: 400, skewMs: 100 }, waitMs: 800, pollMs: 50, onWait: () => waits++ }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(waits).toBe(1);
    stopRenewing(); // the holder dies: no more renewals
    const got = await acquireLease(dir, newOwner({ attempt: 2 }), { timing: { ttlMs: 400, skewMs: 100 }, waitMs: 5_000, pollMs: 50 });
    expect(got.generation).toBe(2);
    expect(got.tookOver?.owner.attempt).toBe(1);
  });

  it('keepRenewed reports a takeover once', async () => {
    const dir = await tmpDir();
    const a = lease(await take(dir));
    const lost: LeaseLostError[] = [];
    const stop = keepRenewed(a, 50, (e) => lost.push(e));
    const later = clock(Date.now() + 60_000);
    const b = lease(await take(dir, later, 2)); // judged stale on a clock far ahead
    await new Promise((r) => setTimeout(r, 300));
    stop();
    expect(lost).toHaveLength(1);
    expect(lost[0]!.message).toContain(`pid ${process.pid}, attempt 2 (generation ${b.generation})`);
  });

  it('the Python twin agrees on who owns the folder', async () => {
    const dir = await tmpDir();
    const c = clock();
    const a = lease(await take(dir, c));
    const code = `import json, sys
sys.path.insert(0, ${JSON.stringify(path.join(projectRoot, 'scripts'))})
from ratioloop_py import lease
held = lease.from_env()
by = lease.superseded_by(held)
rec = lease.current(held.lease_dir)
print(json.dumps({"owner": by is None, "stale_now": lease.is_stale(rec, ${c.now()}, 500), "stale_later": lease.is_stale(rec, ${c.now() + 1_501}, 500), "by": None if by is None else lease.describe(by)}))`;
    const ask = async (): Promise<{ owner: boolean; stale_now: boolean; stale_later: boolean; by: string | null }> =>
      JSON.parse((await run(pythonPath(), ['-c', code], { env: { ...process.env, ...a.env(2_000) } })).stdout) as never;
    expect(await ask()).toEqual({ owner: true, stale_now: false, stale_later: true, by: null });
    c.set(c.now() + 5_000);
    const b = lease(await take(dir, c, 7));
    expect(await ask()).toMatchObject({ owner: false, by: `host ${b.record.owner.host}, pid ${process.pid}, attempt 7 (generation 2)` });
  });
});
