// GPU slots without GPUs: the pool is abstract (device ids are strings), so its rules are checked directly.
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths';
import { GpuSlotPool, SlotError, slotPoolFromFlags } from '../src/gpuSlots';
import { gpuPollGate } from '../src/gpuPollGate';
import { slotEnv } from '../activities/stageSlots';

const settle = () => new Promise((r) => setTimeout(r, 0));

describe('GpuSlotPool', () => {
  it('gives two concurrent one-slot stages different devices, and a k-slot stage k distinct ones', async () => {
    const pool = new GpuSlotPool(['0', '1', '2', '3'], true);
    const a = await pool.acquire(1);
    const b = await pool.acquire(1);
    expect(a.devices).toEqual(['0']);
    expect(b.devices).toEqual(['1']);
    const c = await pool.acquire(2);
    expect(c.devices).toEqual(['2', '3']);
    expect(pool.free()).toBe(0);
    a.release();
    a.release(); // twice is harmless
    expect(pool.free()).toBe(1);
    const d = await pool.acquire(1);
    expect(d.devices).toEqual(['0']);
    for (const l of [b, c, d]) l.release();
    expect(pool.free()).toBe(4);
  });

  it('is first come, first served: a waiting k-slot stage is not overtaken by later one-slot stages', async () => {
    const pool = new GpuSlotPool(['0', '1'], true);
    const first = await pool.acquire(1);
    const order: string[] = [];
    const big = pool.acquire(2).then((l) => (order.push('big'), l));
    const small = pool.acquire(1).then((l) => (order.push('small'), l));
    await settle();
    // One device is free, but the big stage came first: the small one waits behind it.
    expect(order).toEqual([]);
    expect(pool.free()).toBe(1);
    expect(pool.waiting()).toBe(2);
    first.release();
    const bigLease = await big;
    expect(bigLease.devices).toEqual(['0', '1']);
    await settle();
    expect(order).toEqual(['big']);
    bigLease.release();
    expect((await small).devices).toEqual(['0']);
    expect(order).toEqual(['big', 'small']);
  });

  it('a cancelled waiter leaves the queue, and those behind it move up', async () => {
    const pool = new GpuSlotPool(['0', '1'], true);
    const held = await pool.acquire(1);
    const abort = new AbortController();
    const big = pool.acquire(2, { signal: abort.signal });
    const small = pool.acquire(1);
    await settle();
    abort.abort(new Error('cancelled'));
    await expect(big).rejects.toThrow('cancelled');
    expect((await small).devices).toEqual(['1']);
    held.release();
    expect(pool.waiting()).toBe(0);
  });

  it('refuses at once a stage that needs more slots than the worker has (another worker may have them)', async () => {
    const pool = new GpuSlotPool(['0', '1'], true);
    await expect(pool.acquire(4)).rejects.toThrow(SlotError);
    await expect(pool.acquire(4)).rejects.toThrow('needs 4 GPU slots on one machine; this worker has 2 (0,1)');
    expect((await pool.acquire(0)).devices).toEqual([]); // pairs on a gpu queue takes none
  });

  it('whole machine (no slot flags): one stage at a time whatever it needs, nothing pinned', async () => {
    const pool = GpuSlotPool.wholeMachine();
    const train = await pool.acquire(8);
    expect(train.devices).toEqual([]);
    expect(slotEnv(pool, train)).toEqual({});
    let second = false;
    const next = pool.acquire(1).then((l) => ((second = true), l));
    await settle();
    expect(second).toBe(false);
    train.release();
    (await next).release();
  });

  it('pins CUDA_VISIBLE_DEVICES to the lease (empty for a stage that needs no GPU)', async () => {
    const pool = new GpuSlotPool(['GPU-aa', 'GPU-bb'], true);
    expect(slotEnv(pool, await pool.acquire(2))).toEqual({ CUDA_VISIBLE_DEVICES: 'GPU-aa,GPU-bb' });
    expect(slotEnv(pool, await pool.acquire(0))).toEqual({ CUDA_VISIBLE_DEVICES: '' });
    expect(slotEnv(undefined, undefined)).toEqual({});
  });
});

describe('worker slot flags', () => {
  it('--gpus takes device ids as given; --gpu-slots N the first N visible devices, else 0..N-1', () => {
    expect(slotPoolFromFlags({ gpus: '2,3' }, {})!.slots).toEqual(['2', '3']);
    expect(slotPoolFromFlags({ gpuSlots: '3' }, {})!.slots).toEqual(['0', '1', '2']);
    expect(slotPoolFromFlags({ gpuSlots: '2' }, { CUDA_VISIBLE_DEVICES: '4,5,6' })!.slots).toEqual(['4', '5']);
    expect(slotPoolFromFlags({}, {})).toBeUndefined();
  });

  it('rejects bad flags with the reason', () => {
    expect(() => slotPoolFromFlags({ gpus: '0,1', gpuSlots: '2' }, {})).toThrow('not both');
    expect(() => slotPoolFromFlags({ gpus: '0,,1' }, {})).toThrow('comma-separated list');
    expect(() => slotPoolFromFlags({ gpus: '0,0' }, {})).toThrow('listed twice');
    expect(slotPoolFromFlags({ gpus: '0' }, { CUDA_VISIBLE_DEVICES: '' })!.slots).toEqual(['0']); // empty: no allocation to check
    expect(() => slotPoolFromFlags({ gpuSlots: '0' }, {})).toThrow('at least 1');
    expect(() => slotPoolFromFlags({ gpuSlots: '4' }, { CUDA_VISIBLE_DEVICES: '0,1' })).toThrow('names only 2');
    expect(() => slotPoolFromFlags({ gpus: '0,3' }, { CUDA_VISIBLE_DEVICES: '0,1' })).toThrow("3 not in this worker's CUDA_VISIBLE_DEVICES");
  });
});

describe('gpu poll gate', () => {
  const ctx = { slotType: 'activity', taskQueue: 'q', workerIdentity: 'w', workerBuildId: '', isSticky: false } as never;

  it('polls only while a slot is free and not promised to a waiting stage', async () => {
    const pool = new GpuSlotPool(['0', '1'], true);
    const gate = gpuPollGate(pool);
    const p1 = await gate.reserveSlot(ctx, new AbortController().signal);
    const p2 = gate.tryReserveSlot(ctx);
    expect(p2).not.toBeNull();
    expect(gate.tryReserveSlot(ctx)).toBeNull(); // two permits for two slots
    // A poll that came back empty gives its permit back: another poll may start.
    gate.releaseSlot({ permit: p2! });
    gate.releaseSlot({ permit: p2! }); // released once only
    expect(gate.tryReserveSlot(ctx)).not.toBeNull();
    gate.releaseSlot({ permit: p1 });
  });

  it('a stage from a class queue waiting for its devices stops one-GPU polling until it has them', async () => {
    const pool = new GpuSlotPool(['0', '1'], true);
    const gate = gpuPollGate(pool);
    const permit = await gate.reserveSlot(ctx, new AbortController().signal);
    const one = await pool.acquire(1, { viaPermit: true }); // that permit's stage runs on device 0
    const big = pool.acquire(2); // a gpu-x2 stage: waits for device 0
    await settle();
    let polled = false;
    const next = gate.reserveSlot(ctx, new AbortController().signal).then((p) => ((polled = true), p));
    await settle();
    expect(polled).toBe(false);
    one.release();
    gate.releaseSlot({ permit });
    const bigLease = await big;
    await settle();
    expect(polled).toBe(false); // both devices are the big stage's now
    bigLease.release();
    gate.releaseSlot({ permit: await next });
    expect(polled).toBe(true);
  });

  it('an aborted reservation rejects and issues nothing', async () => {
    const pool = new GpuSlotPool(['0'], true);
    const gate = gpuPollGate(pool);
    const held = await gate.reserveSlot(ctx, new AbortController().signal);
    const abort = new AbortController();
    const r = gate.reserveSlot(ctx, abort.signal);
    abort.abort(new Error('no longer needed'));
    await expect(r).rejects.toThrow('no longer needed');
    gate.releaseSlot({ permit: held });
    expect(gate.tryReserveSlot(ctx)).not.toBeNull();
  });
});

describe('ratioloop worker flags', () => {
  const cli = (...args: string[]) => execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), ...args], { cwd: projectRoot, reject: false, env: { TEMPORAL_ADDRESS: '', CUDA_VISIBLE_DEVICES: '' } });
  it('bad --gpus, --gpu-slots or --queue-prefix: exit 2 with the reason, before any server is looked for', async () => {
    const twice = await cli('worker', '--queues', 'gpu', '--gpus', '0,0');
    expect(twice.exitCode).toBe(2);
    expect(twice.stderr).toContain('--gpus 0,0: a device is listed twice');
    const both = await cli('worker', '--gpus', '0', '--gpu-slots', '1');
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toContain('give --gpus or --gpu-slots, not both');
    const prefix = await cli('worker', '--queue-prefix', 'my team');
    expect(prefix.exitCode).toBe(2);
    expect(prefix.stderr).toContain('--queue-prefix "my team"');
  });
});
