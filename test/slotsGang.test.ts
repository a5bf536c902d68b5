// Gang building blocks: the pure rank planner, the claim a machine answers with, and the per-host queue a worker polls.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import type { alignmentRun } from '../workflows/alignmentRun';
import { gangMachines, planGang, type GangClaim } from '../workflows/gang';
import { createGangActivities } from '../activities/gangClaim';
import { GpuSlotPool } from '../src/gpuSlots';
import { hostQueueName } from '../src/queues';
import { writeJsonAtomic } from '../src/runStore';
import { startWorkers } from '../src/worker';
import { baseConfig, client, fixturePlan, fixtureScripts, runRecord, settings, tmpDir, uniqueQueues } from './helpers';

const claim = (host: string, port = 29500): GangClaim => ({ taskQueue: `q-gpu-host-${host}`, host, address: `${host}.cluster`, port });

describe('planGang', () => {
  it('one rank per machine, rank 0 on the first claim, its address in every rank’s environment', () => {
    const plan = planGang(2, [claim('b', 41000), claim('a', 42000)]);
    expect(plan).toEqual({
      ranks: [
        { rank: 0, taskQueue: 'q-gpu-host-b', env: { RATIOLOOP_MACHINE_RANK: '0', RATIOLOOP_MAIN_PROCESS_IP: 'b.cluster', RATIOLOOP_MAIN_PROCESS_PORT: '41000' } },
        { rank: 1, taskQueue: 'q-gpu-host-a', env: { RATIOLOOP_MACHINE_RANK: '1', RATIOLOOP_MAIN_PROCESS_IP: 'b.cluster', RATIOLOOP_MAIN_PROCESS_PORT: '41000' } },
      ],
    });
  });

  it('refuses a gang it cannot start: too few machines, one machine twice, a bad port', () => {
    expect(planGang(2, [claim('a')])).toEqual({ problem: 'the gang needs 2 machines and has 1' });
    expect(planGang(2, [claim('a'), claim('a')])).toEqual({ problem: 'host a was claimed twice (q-gpu-host-a)' });
    expect(planGang(1, [claim('a', 0)])).toEqual({ problem: 'host a offered port 0' });
  });

  it('reads the machine count from train.launch', () => {
    expect(gangMachines({ launch: { num_machines: 4 } })).toBe(4);
    expect(gangMachines({})).toBe(1);
  });
});

describe('claimMachine', () => {
  it('answers with this host’s queue and a port nothing listens on', async () => {
    const c = await createGangActivities('q-host', '10.0.0.7').claimMachine();
    expect(c).toMatchObject({ taskQueue: 'q-host', host: os.hostname(), address: '10.0.0.7' });
    // The port is free: binding it works.
    await new Promise<void>((resolve, reject) => {
      const srv = net.createServer().once('error', reject);
      srv.listen(c.port, () => srv.close(() => resolve()));
    });
  });

  it('host queue names share the gpu queue’s prefix and only use queue-name characters', () => {
    expect(hostQueueName('ratioloop-ada-gpu', 'node 7.example')).toBe('ratioloop-ada-gpu-host-node-7.example');
  });
});

describe('per-host queue', () => {
  let c: Client;
  let close: () => Promise<void>;
  beforeAll(async () => ({ client: c, close } = await client()));
  afterAll(async () => close());

  it('a worker with hostQueue serves work sent to its machine’s own queue, with its slots', async () => {
    const dir = await tmpDir();
    const raw = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false } };
    const plan = await fixturePlan(dir, 'host-queue', {}, raw);
    const q = uniqueQueues();
    plan.stages = ['sample'];
    // The sample stage addressed to this machine: its gpu queue is the worker's host queue.
    plan.queues = { ...q, gpu: hostQueueName(q.gpu) };
    await writeJsonAtomic(path.join(plan.runDir, 'run.json'), { ...(await runRecord(plan)), plan });
    const workers = await startWorkers({ settings: settings(), roles: ['control', 'cpu', 'gpu'], queues: q, hostQueue: true, gpuSlots: new GpuSlotPool(['3'], true), stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } });
    try {
      expect(workers.hostQueue).toBe(hostQueueName(q.gpu));
      const h = await c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan] });
      expect((await h.result()).status).toBe('completed');
      const rec = JSON.parse(await readFile(path.join(plan.runDir, 'iter-1', 'sample', 'logs', 'attempt-1.worker.json'), 'utf8')) as { taskQueue: string; gpus: string[] };
      expect(rec).toMatchObject({ taskQueue: hostQueueName(q.gpu), gpus: ['3'] });
    } finally {
      await workers.shutdown();
    }
  });
});
