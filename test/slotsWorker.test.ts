// GPU slots end to end, without GPUs: a worker with two abstract slots runs fixture stages that log the
// CUDA_VISIBLE_DEVICES they got, against the real dev server.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import type { alignmentRun } from '../workflows/alignmentRun';
import type { RunPlan, RunQueues } from '../workflows/types';
import { GpuSlotPool } from '../src/gpuSlots';
import { runStatus } from '../src/client/runs';
import { statusLines } from '../src/progressView';
import { startWorkers } from '../src/worker';
import { writeJsonAtomic } from '../src/runStore';
import { baseConfig, client, fixturePlan, fixtureScripts, runRecord, settings, tmpDir, uniqueQueues } from './helpers';

let c: Client;
let close: () => Promise<void>;
beforeAll(async () => ({ client: c, close } = await client()));
afterAll(async () => close());

interface Ran {
  devices: string[];
  start: number;
  end: number;
}
const ran = async (plan: RunPlan): Promise<Ran[]> =>
  (await readFile(path.join(plan.runDir, 'devices.log'), 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [, , cvd, start, end] = l.split(' ');
      return { devices: cvd!.split(','), start: Number(start), end: Number(end) };
    });
const overlap = (a: Ran, b: Ran): boolean => a.start < b.end && b.start < a.end;

/** A one-iteration plan of the sample stage only, on the given queues; `sample` adds to its config section. */
async function samplePlan(dir: string, runId: string, queues: RunQueues, sample: Record<string, unknown> = {}): Promise<RunPlan> {
  const raw = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false }, sample };
  const plan = await fixturePlan(dir, runId, { sample: { sleep_s: 2 } }, raw);
  plan.stages = ['sample'];
  plan.queues = queues;
  await writeJsonAtomic(path.join(plan.runDir, 'run.json'), { ...(await runRecord(plan)), plan }); // status reads the recorded plan
  return plan;
}

const run = (plan: RunPlan) => c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan] });

describe('gpu slots', () => {
  it('two one-GPU stages run at once on different devices; a two-GPU stage gets both and waits its turn', async () => {
    const dir = await tmpDir();
    const q = uniqueQueues();
    const queues: RunQueues = { ...q, 'gpu-x2': `${q.gpu}-x2`, 'gpu-x4': `${q.gpu}-x4` };
    const a = await samplePlan(dir, 'slots-a', queues);
    const b = await samplePlan(dir, 'slots-b', queues);
    const pair = await samplePlan(dir, 'slots-pair', queues, { num_processes: 2 });
    const one = await samplePlan(dir, 'slots-one', queues);
    const wide = await samplePlan(dir, 'slots-wide', queues, { num_processes: 4 });
    expect(pair.stagePlans.sample.queue).toBe('gpu-x2');
    expect(wide.stagePlans.sample.queue).toBe('gpu-x4');

    const workers = await startWorkers({ settings: settings(), roles: ['control', 'cpu', 'gpu'], queues, gpuSlots: new GpuSlotPool(['0', '1'], true), stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } });
    try {
      expect(workers.polled).toEqual({ control: queues.control, cpu: queues.cpu, gpu: queues.gpu, 'gpu-x2': queues['gpu-x2'] });
      expect(workers.unservable).toEqual(['gpu-x4']); // two slots cannot hold a four-GPU stage

      await Promise.all([run(a), run(b)].map(async (h) => expect((await (await h).result()).status).toBe('completed')));
      const [ra, rb] = [(await ran(a))[0]!, (await ran(b))[0]!];
      expect(ra.devices).toHaveLength(1);
      expect(rb.devices).toHaveLength(1);
      expect(ra.devices[0]).not.toBe(rb.devices[0]);
      expect(overlap(ra, rb)).toBe(true);
      const record = JSON.parse(await readFile(path.join(a.runDir, 'iter-1', 'sample', 'logs', 'attempt-1.worker.json'), 'utf8')) as { gpus: string[]; taskQueue: string };
      expect(record).toMatchObject({ gpus: ra.devices, taskQueue: queues.gpu });

      // The two-GPU stage first, then a one-GPU stage: the second waits until both devices are back.
      const hp = await run(pair);
      for (let i = 0; i < 100 && !(await runRecord(pair)).stages.some((s) => s.status === 'running'); i++) await new Promise((r) => setTimeout(r, 100));
      const ho = await run(one);
      for (const h of [hp, ho]) expect((await h.result()).status).toBe('completed');
      const [rp, ro] = [(await ran(pair))[0]!, (await ran(one))[0]!];
      expect(new Set(rp.devices)).toEqual(new Set(['0', '1']));
      expect(ro.devices).toHaveLength(1);
      expect(overlap(rp, ro)).toBe(false);

      // Nobody here can take the four-GPU stage: status names its class queue.
      const hw = await run(wide);
      try {
        let lines = '';
        for (let i = 0; i < 100 && !lines.includes('no worker is polling'); i++) {
          await new Promise((r) => setTimeout(r, 200));
          lines = statusLines(await runStatus(c, path.dirname(wide.runDir), wide.runId)).join('\n');
        }
        expect(lines).toContain(`waiting: no worker is polling queue ${queues['gpu-x4']}`);
      } finally {
        await hw.terminate('test over');
      }
    } finally {
      await workers.shutdown();
    }
  });
});
