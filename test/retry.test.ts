// Retries fit for preemptible fleets, against the real dev server with fixture stages: no attempt cap for resumable
// stages, maxFailures for failures a live worker reports, out of memory (batch halved once, partial work kept), a
// SIGKILL nobody asked for, an exit-0 stage without a manifest, a flaky run store, and a cancel while the worker is dead.
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelledFailure, WorkflowFailedError, type Client } from '@temporalio/client';
import type { alignmentRun } from '../workflows/alignmentRun';
import type { RunPlan, StageName } from '../workflows/types';
import { client, fixturePlan, fixtureWorkers, runRecord, settings, tmpDir } from './helpers';
import { startDeadStageWorker } from './deadWorker';

let c: Client;
let close: () => Promise<void>;
beforeAll(async () => ({ client: c, close } = await client()));
afterAll(async () => close());

/** A one-iteration plan over the first `stages`, retrying fast (the policy's shape is what is under test). */
async function quickPlan(runId: string, fixture: Record<string, unknown>, stages: StageName[] = ['sample']): Promise<RunPlan> {
  const plan = await fixturePlan(await tmpDir(), runId, fixture);
  plan.iterations = 1;
  plan.stages = stages;
  for (const s of stages) plan.stagePlans[s].options = { ...plan.stagePlans[s].options, initialInterval: '100ms', maximumInterval: '200ms' };
  return plan;
}

const start = (plan: RunPlan) => c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan] });
const attempts = async (plan: RunPlan, stage: string): Promise<string[]> =>
  (await readFile(path.join(plan.runDir, 'invocations.log'), 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith(`1 ${stage} `)).map((l) => l.split(' ')[2]!);
const failureOf = async (p: Promise<unknown>): Promise<string> => {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  return (err as WorkflowFailedError).cause?.message ?? '';
};
const json = async (file: string): Promise<Record<string, unknown>> => JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;

describe('stage retries', () => {
  it('a resumable stage has no attempt cap; a SIGKILL nobody asked for is resource exhaustion (likely the kernel OOM killer)', async () => {
    // Attempts 1-2: this worker's environment (not counted); 3: SIGKILL (counted, retried); 4: done. The old policy stopped at 3.
    const plan = await quickPlan('no-cap', { sample: { fail_attempts: 2, fail_code: 4, sigkill_attempts: 3 } });
    expect(plan.stagePlans.sample.options.maximumAttempts).toBe(0);
    const workers = await fixtureWorkers(plan);
    try {
      expect((await (await start(plan)).result()).status).toBe('completed');
      expect(await attempts(plan, 'sample')).toEqual(['1', '2', '3', '4']);
      const logs = path.join(plan.runDir, 'iter-1/sample/logs');
      expect(await json(path.join(logs, 'attempt-3.failure.json'))).toMatchObject({ attempt: 3, type: 'ResourceExhausted' });
      await expect(stat(path.join(logs, 'attempt-2.failure.json'))).rejects.toThrow(); // WorkerEnvironment is not counted
    } finally {
      await workers.shutdown();
    }
  });

  it('crashes on a live worker count: maxFailures 2 ends the stage after the second, not retried again', async () => {
    const plan = await quickPlan('max-failures', { sample: { fail_attempts: 9 } });
    plan.stagePlans.sample.options.maxFailures = 2;
    const workers = await fixtureWorkers(plan);
    try {
      const msg = await failureOf((await start(plan)).result());
      expect(msg).toMatch(/^iteration 1 sample: sample\.py exited with code 1 \(on .*\n(.*\n)*fixture: failing attempt 2 on purpose\n/);
      expect(msg).toContain("failed 2 times on live workers, the stage's maxFailures");
      expect(await attempts(plan, 'sample')).toEqual(['1', '2']);
      expect((await runRecord(plan)).status).toBe('failed');
    } finally {
      await workers.shutdown();
    }
  });

  it('out of memory: retried once with the batch halved, partial work kept, the change in the manifest, same spec hash', async () => {
    const plan = await quickPlan('oom-halve', { sample: { oom_above_batch: 4 } });
    expect(plan.stagePlans.sample.params.batch_size).toBe(8);
    const workers = await fixtureWorkers(plan);
    try {
      expect((await (await start(plan)).result()).status).toBe('completed');
      expect(await attempts(plan, 'sample')).toEqual(['1', '2']);
      const dir = path.join(plan.runDir, 'iter-1/sample');
      // Attempt 1's partial work is still there (not set aside as another spec's), and attempt 2 ran with 4.
      expect(await readFile(path.join(dir, 'partial/attempt-1'), 'utf8')).toBe('8');
      expect(await readFile(path.join(dir, 'partial/attempt-2'), 'utf8')).toBe('4');
      const manifest = await json(path.join(dir, 'manifest.json'));
      expect(manifest.throughput).toMatchObject({ params: { batch_size: 4 }, from: { batch_size: 8 }, reason: 'out of memory in attempt 1' });
      const spec = await json(path.join(dir, 'spec.json'));
      expect(manifest.specHash).toBe(spec.specHash);
      expect((spec.params as Record<string, unknown>).batch_size).toBe(8); // the configured spec is unchanged
      // The manifest proves the stage done for the configured spec: a second run skips it.
      expect((await (await start(plan)).result()).stages[0]?.status).toBe('skipped');
      expect(await attempts(plan, 'sample')).toHaveLength(2);
    } finally {
      await workers.shutdown();
    }
  });

  it('out of memory again after halving: fails at once, naming the knob', async () => {
    const plan = await quickPlan('oom-twice', { sample: { oom_above_batch: 1 } });
    const workers = await fixtureWorkers(plan);
    try {
      const msg = await failureOf((await start(plan)).result());
      expect(msg).toMatch(/out of memory on .*: MemoryError: fixture: batch_size 4 does not fit; not retried \(already halved once: sample\.batch_size is 4\): lower sample\.batch_size/);
      expect(await attempts(plan, 'sample')).toEqual(['1', '2']);
    } finally {
      await workers.shutdown();
    }
  });

  it('exit 0 without a manifest is a bug: ManifestInvalid, not retried', async () => {
    const plan = await quickPlan('no-manifest', { sample: { no_manifest: true } });
    const workers = await fixtureWorkers(plan);
    try {
      const msg = await failureOf((await start(plan)).result());
      expect(msg).toContain('sample exited 0 but its manifest is not valid: no manifest');
      expect(await attempts(plan, 'sample')).toEqual(['1']);
    } finally {
      await workers.shutdown();
    }
  });
});

describe('bookkeeping and cancel', () => {
  it('a run store that is unavailable for a while holds the run; nothing is lost when it comes back', async () => {
    const plan = await quickPlan('flaky-store', { sample: { sleep_s: 1 } }, ['sample', 'score']);
    const workers = await fixtureWorkers(plan);
    const runJson = path.join(plan.runDir, 'run.json');
    const aside = path.join(plan.runDir, 'run.json.aside');
    try {
      const h = await start(plan);
      for (let i = 0; i < 100 && !(await attempts(plan, 'sample')).length; i++) await new Promise((r) => setTimeout(r, 100));
      await rename(runJson, aside);
      await mkdir(runJson); // run.json unreadable and unwritable: every bookkeeping call fails
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await attempts(plan, 'score')).toEqual([]); // held at sample's bookkeeping
      await rm(runJson, { recursive: true });
      await rename(aside, runJson);
      expect((await h.result()).status).toBe('completed');
      const rec = await runRecord(plan);
      expect(rec.status).toBe('completed');
      expect(rec.stages.map((s) => `${s.stage}:${s.status}`)).toEqual(['sample:done', 'score:done']);
    } finally {
      await workers.shutdown();
    }
  });

  it('a cancel while the stage worker is dead ends the run cancelled, not failed', async () => {
    const plan = await quickPlan('cancel-dead-worker', {});
    plan.stagePlans.sample.options.heartbeatTimeout = '2s';
    const workers = await fixtureWorkers(plan, ['control', 'cpu']);
    const dead = await startDeadStageWorker(settings().address, plan.queues.gpu);
    try {
      const h = await start(plan);
      await dead.taken;
      await h.cancel();
      const err = await h.result().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
      expect((await h.describe()).status.name).toBe('CANCELLED');
      const rec = await runRecord(plan);
      expect(rec.status).toBe('cancelled');
      expect(rec.stages.find((s) => s.stage === 'sample')?.status).toBe('cancelled');
      await expect(stat(path.join(plan.runDir, 'iter-1/sample/manifest.json'))).rejects.toThrow();
    } finally {
      await dead.shutdown();
      await workers.shutdown();
    }
  });
});
