// The alignment workflow and the stage runner against a real dev server, with fixture stage programs.
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { progressQuery } from '../workflows/messages';
import type { RunPlan } from '../workflows/types';
import type { alignmentRun } from '../workflows/alignmentRun';
import { client, fixturePlan, fixtureScripts, fixtureWorkers, runRecord, settings, tmpDir } from './helpers';
import Long from 'long';
import type { Logger } from 'pino';
import { Client as TemporalClient } from '@temporalio/client';
import { controlRun, resumeRun, runStatus } from '../src/client/runs';
import { statusLines } from '../src/progressView';
import { prepareNamespace, type NamespaceServices } from '../src/temporal';
import { startWorkers } from '../src/worker';

let c: Client;
let close: () => Promise<void>;
beforeAll(async () => ({ client: c, close } = await client()));
afterAll(async () => close());

const start = (plan: RunPlan) => c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan] });
const invocations = async (plan: RunPlan): Promise<string[]> =>
  (await readFile(path.join(plan.runDir, 'invocations.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('alignmentRun', () => {
  it('runs 2 iterations of all stages, then resume skips every done stage without touching manifests', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'two-iter');
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      const result = await h.result(); // follows the chain of executions
      expect(result.status).toBe('completed');
      // Workflow state holds the current iteration only; run.json holds them all.
      expect(result.stages.map((s) => `${s.iteration}:${s.stage}:${s.status}`)).toEqual(['sample', 'score', 'pairs', 'train', 'evaluate'].map((s) => `2:${s}:done`));
      const progress = await h.query(progressQuery);
      expect(progress.status).toBe('completed');
      expect(await invocations(plan)).toHaveLength(10);
      // iteration 2 samples from iteration 1's trained model
      const spec2 = JSON.parse(await readFile(path.join(plan.runDir, 'iter-2/sample/spec.json'), 'utf8'));
      expect(spec2.inputs.policy.path).toBe(path.join(plan.runDir, 'iter-1/train/model'));
      const rec = await runRecord(plan);
      expect(rec.status).toBe('completed');
      expect(rec.stages.map((s) => `${s.iteration}:${s.stage}:${s.status}`)).toEqual(
        [1, 2].flatMap((k) => ['sample', 'score', 'pairs', 'train', 'evaluate'].map((s) => `${k}:${s}:done`)),
      );
      // One execution per iteration (continue-as-new at the boundary), each recorded with the bundle's build id.
      expect(rec.executions?.map((x) => x.fromIteration)).toEqual([1, 2]);
      expect(new Set(rec.executions?.map((x) => x.workflowRunId)).size).toBe(2);
      expect(rec.executions?.every((x) => x.buildId === workers.buildId && /^ratioloop-[0-9a-f]{16}$/.test(x.buildId ?? ''))).toBe(true);
      const latest = await c.workflow.getHandle(plan.runId).describe();
      expect(latest.runId).toBe(rec.executions?.[1]?.workflowRunId);
      const attempt = JSON.parse(await readFile(path.join(plan.runDir, 'iter-2/train/logs/attempt-1.worker.json'), 'utf8'));
      expect(attempt.workflowBuildId).toBe(workers.buildId);
      expect(attempt.workflowRunId).toBe(latest.runId);

      const manifests = ['iter-1/sample', 'iter-2/evaluate'].map((d) => path.join(plan.runDir, d, 'manifest.json'));
      const before = await Promise.all(manifests.map(async (m) => (await stat(m)).mtimeMs));
      const again = await (await start(plan)).result();
      expect(again.stages.every((s) => s.status === 'skipped')).toBe(true);
      expect((await runRecord(plan)).stages.every((s) => s.status === 'skipped')).toBe(true);
      expect(await invocations(plan)).toHaveLength(10); // no stage process ran again
      expect(await Promise.all(manifests.map(async (m) => (await stat(m)).mtimeMs))).toEqual(before);
    } finally {
      await workers.shutdown();
    }
  });

  it('retries a stage that fails once, and continues', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'retry-once', { score: { fail_attempts: 1 } });
    plan.iterations = 1;
    plan.stagePlans.score.options.initialInterval = '3s'; // time to see the retry pending in status
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      let seen: string | undefined;
      for (let i = 0; i < 100 && !seen; i++) {
        const st = await runStatus(c, path.dirname(plan.runDir), plan.runId);
        if (st.attempts?.some((x) => x.stage === 'score' && x.attempt === 2)) seen = statusLines(st).find((l) => l.includes('score'));
        else await new Promise((r) => setTimeout(r, 100));
      }
      expect(seen).toMatch(/score +\S.*\(attempt 2; last failure: .*exit/);
      const result = await h.result();
      expect(result.status).toBe('completed');
      const scoreRuns = (await invocations(plan)).filter((l) => l.startsWith('1 score'));
      expect(scoreRuns.map((l) => l.split(' ')[2])).toEqual(['1', '2']);
      expect(await readFile(path.join(plan.runDir, 'iter-1/score/logs/attempt-1.stderr.log'), 'utf8')).toContain('failing attempt 1 on purpose');
    } finally {
      await workers.shutdown();
    }
  });

  it('fails the run at once with the script message when a stage exits 2', async () => {
    const dir = await tmpDir();
    const flag = path.join(dir, 'input-is-bad');
    await writeFile(flag, 'x');
    const plan = await fixturePlan(dir, 'bad-input', { pairs: { bad_input: 'scores.jsonl:3: rewards must be a list', bad_input_while: flag } });
    const workers = await fixtureWorkers(plan);
    try {
      const err = await (await start(plan)).result().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect((err as WorkflowFailedError).cause?.message).toContain('iteration 1 pairs: scores.jsonl:3: rewards must be a list');
      expect((await invocations(plan)).filter((l) => l.includes('pairs'))).toHaveLength(1); // not retried
      const rec = await runRecord(plan);
      expect(rec.status).toBe('failed');
      expect(rec.stages.find((s) => s.stage === 'pairs')?.status).toBe('failed');
      expect(rec.error).toContain('rewards must be a list');

      // Fix the input, resume: earlier stages are skipped, the run completes.
      await rm(flag);
      const resumed = await (await start(plan)).result();
      expect(resumed.status).toBe('completed');
      const lines = await invocations(plan);
      expect(lines.filter((l) => l.startsWith('1 sample'))).toHaveLength(1);
      expect(lines.filter((l) => l.startsWith('1 score'))).toHaveLength(1);
    } finally {
      await workers.shutdown();
    }
  });

  it('cancel kills the stage process group: no process survives', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'cancel-me', { sample: { sleep_s: 120, spawn_child: true } });
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      const childPid = path.join(plan.runDir, 'iter-1/sample/child.pid');
      const selfPid = path.join(plan.runDir, 'iter-1/sample/self.pid');
      for (let i = 0; i < 300; i++) {
        if (await stat(childPid).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const pids = [Number(await readFile(childPid, 'utf8')), Number(await readFile(selfPid, 'utf8'))];
      expect(pids.every(alive)).toBe(true);
      await h.cancel();
      await expect(h.result()).rejects.toThrow();
      for (let i = 0; i < 50 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
      expect(pids.filter(alive)).toEqual([]);
      const rec = await runRecord(plan);
      expect(rec.status).toBe('cancelled');
      expect(rec.stages.find((s) => s.stage === 'sample')?.status).toBe('cancelled');
    } finally {
      await workers.shutdown();
    }
  });
});

describe('clusters without privileges', () => {
  const recorder = () => {
    const warnings: string[] = [];
    const log = { warn: (...a: unknown[]) => warnings.push(a.map(String).join(' ')), debug: () => undefined } as unknown as Logger;
    return { warnings, log };
  };

  it('prepareNamespace: attributes that cannot be added → false with one warning; retention untouched off the embedded server', async () => {
    const updates: unknown[] = [];
    const restricted = (listable: boolean) =>
      ({
        operatorService: {
          listSearchAttributes: () => (listable ? Promise.resolve({ customAttributes: { Other: 2 } }) : Promise.reject(new Error('7 PERMISSION_DENIED: Request unauthorized.'))),
          addSearchAttributes: () => Promise.reject(new Error('7 PERMISSION_DENIED: Request unauthorized.')),
        },
        workflowService: {
          describeNamespace: () => Promise.resolve({ config: { workflowExecutionRetentionTtl: { seconds: Long.fromNumber(86400) } } }),
          updateNamespace: (r: unknown) => Promise.resolve(void updates.push(r)),
        },
      }) as unknown as NamespaceServices;
    const a = recorder();
    expect(await prepareNamespace(restricted(true), 'team-ns', { log: a.log })).toBe(false);
    expect(a.warnings).toHaveLength(1);
    expect(a.warnings[0]).toContain('RatioloopRunId, RatioloopIteration, RatioloopStage are not registered on namespace team-ns');
    expect(a.warnings[0]).toContain('temporal operator search-attribute create --namespace team-ns --name RatioloopIteration --type Int');
    expect(updates).toEqual([]);
    // Not even listable (no operator API): unknown, and nothing said yet (start falls back if rejected).
    const b = recorder();
    expect(await prepareNamespace(restricted(false), 'team-ns', { log: b.log })).toBeUndefined();
    expect(b.warnings).toEqual([]);
    // The embedded server: retention raised.
    expect(await prepareNamespace(restricted(true), 'default', { retention: true, log: b.log })).toBe(false);
    expect(updates).toHaveLength(1);
  });

  it('a run on a namespace without the attributes: start falls back once, the workflow never upserts, 2 iterations complete', async () => {
    const ns = `noattrs-${Math.random().toString(16).slice(2, 10)}`;
    await c.connection.workflowService.registerNamespace({ namespace: ns, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86400) } });
    const nsClient = new TemporalClient({ connection: c.connection, namespace: ns });
    for (let i = 0; i < 100; i++) {
      const ok = await c.connection.workflowService.describeNamespace({ namespace: ns }).then(() => true, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'no-attrs');
    const workers = await startWorkers({ settings: { ...settings(), namespace: ns }, roles: ['control', 'cpu', 'gpu'], queues: plan.queues, stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } });
    try {
      // resumeRun starts from the recorded plan; searchAttributes unknown → tried, rejected, started without.
      await resumeRun(nsClient, path.dirname(plan.runDir), plan.runId);
      const desc = await nsClient.workflow.getHandle(plan.runId).describe();
      expect(desc.typedSearchAttributes.get({ name: 'RatioloopRunId', type: 'KEYWORD' })).toBeUndefined();
      const result = await nsClient.workflow.getHandle(plan.runId).result();
      expect(result.status).toBe('completed');
      expect((await runRecord(plan)).executions).toHaveLength(2);
    } finally {
      await workers.shutdown();
    }
  });
});

describe('control while running', () => {
  const runsDirOf = (plan: RunPlan): string => path.dirname(plan.runDir);
  const waitUntil = async (what: string, ok: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 600; i++) {
      if (await ok()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const stageIs = (plan: RunPlan, k: number, stage: string, status: string) => async () =>
    (await runRecord(plan)).stages.some((s) => s.iteration === k && s.stage === stage && s.status === status);

  it('pause holds at the next stage boundary (the running stage finishes); status shows it; unpause goes on', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'pause-me', { sample: { sleep_s: 3 } });
    plan.iterations = 1;
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      await waitUntil('sample running', stageIs(plan, 1, 'sample', 'running'));
      expect((await controlRun(c, runsDirOf(plan), plan.runId, 'pause', [])).paused).toBe(true);
      await waitUntil('sample done', stageIs(plan, 1, 'sample', 'done'));
      await new Promise((r) => setTimeout(r, 1500));
      expect((await invocations(plan)).filter((l) => l.includes('score'))).toEqual([]);
      expect((await h.query(progressQuery)).waiting).toBe(true);
      const lines = statusLines(await runStatus(c, runsDirOf(plan), plan.runId));
      expect(lines.join('\n')).toContain('control: paused');
      expect((await controlRun(c, runsDirOf(plan), plan.runId, 'unpause', [])).paused).toBe(false);
      expect((await h.result()).status).toBe('completed');
      expect(await invocations(plan)).toHaveLength(5);
    } finally {
      await workers.shutdown();
    }
  });

  it('set-iterations K raises the count of a running run (validated: 1..100, not below the current iteration)', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'more-iters', { sample: { sleep_s: 2 } });
    plan.iterations = 1;
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      await waitUntil('sample running', stageIs(plan, 1, 'sample', 'running'));
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'set-iterations', ['101'])).rejects.toThrow(/set-iterations refused: iterations must be an integer from 1 to 100/);
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'set-iterations', ['x'])).rejects.toThrow(/K must be an integer/);
      expect((await controlRun(c, runsDirOf(plan), plan.runId, 'set-iterations', ['2'])).iterations).toBe(2);
      expect((await h.result()).status).toBe('completed');
      const rec = await runRecord(plan);
      expect(rec.plan.iterations).toBe(2);
      expect(rec.stages.filter((s) => s.status === 'done')).toHaveLength(10);
      expect(rec.executions).toHaveLength(2);
    } finally {
      await workers.shutdown();
    }
  });

  it('stop-after-iteration ends a 3-iteration run after the current one', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'stop-early', { sample: { sleep_s: 2 } });
    plan.iterations = 3;
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      await waitUntil('sample running', stageIs(plan, 1, 'sample', 'running'));
      expect((await controlRun(c, runsDirOf(plan), plan.runId, 'stop-after-iteration', [])).iterations).toBe(1);
      expect((await h.result()).status).toBe('completed');
      const rec = await runRecord(plan);
      expect(rec.stages.map((s) => s.iteration)).toEqual([1, 1, 1, 1, 1]);
      expect(rec.plan.iterations).toBe(1);
      expect(rec.control?.iterations).toBe(1);
    } finally {
      await workers.shutdown();
    }
  });

  it('skip-stage skips a stage when reached; refuses one a later stage needs or one already started', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'skip-eval', { sample: { sleep_s: 2 } });
    plan.iterations = 1;
    const workers = await fixtureWorkers(plan);
    try {
      const h = await start(plan);
      await waitUntil('sample running', stageIs(plan, 1, 'sample', 'running'));
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'skip-stage', ['1', 'score'])).rejects.toThrow(/iteration 1 pairs needs score's outputs/);
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'skip-stage', ['1', 'sample'])).rejects.toThrow(/already started/);
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'skip-stage', ['1', 'judge'])).rejects.toThrow(/STAGE must be one of/);
      expect((await controlRun(c, runsDirOf(plan), plan.runId, 'skip-stage', ['1', 'evaluate'])).skip).toEqual(['1:evaluate']);
      const status = statusLines(await runStatus(c, runsDirOf(plan), plan.runId)).join('\n');
      expect(status).toContain('control: skip 1 evaluate');
      expect((await h.result()).status).toBe('completed');
      const rec = await runRecord(plan);
      expect(rec.stages.find((s) => s.stage === 'evaluate')).toMatchObject({ status: 'skipped', note: 'skipped on request' });
      expect((await invocations(plan)).filter((l) => l.includes('evaluate'))).toEqual([]);
      expect(rec.stages.find((s) => s.stage === 'train')?.status).toBe('done');
      // A resumed run starts without the old requests: evaluate runs now, the rest is skipped by its manifests.
      await resumeRun(c, runsDirOf(plan), plan.runId);
      expect((await c.workflow.getHandle(plan.runId).result()).status).toBe('completed');
      const after = await runRecord(plan);
      expect(after.control).toBeUndefined();
      expect(after.stages.find((s) => s.stage === 'evaluate')?.status).toBe('done');
      expect((await invocations(plan)).filter((l) => l.includes('evaluate'))).toHaveLength(1);
    } finally {
      await workers.shutdown();
    }
  });

  it('resume attaches to a run left open with no worker (instead of refusing); its workers then finish it', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'left-open');
    plan.iterations = 1;
    const h = await start(plan);
    const again = await resumeRun(c, runsDirOf(plan), plan.runId);
    expect(again.attached).toBe(true);
    await expect(resumeRun(c, runsDirOf(plan), plan.runId, 2)).rejects.toThrow(/set-iterations left-open 2/);
    const workers = await fixtureWorkers(plan);
    try {
      expect((await h.result()).status).toBe('completed');
      expect((await runRecord(plan)).executions).toHaveLength(1); // the same execution: nothing was started twice
    } finally {
      await workers.shutdown();
    }
  });

  it('with no worker: status says which queue nobody polls, and a control request gives up with that advice', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'no-worker');
    const h = await start(plan);
    try {
      const st = await runStatus(c, runsDirOf(plan), plan.runId);
      expect(statusLines(st).join('\n')).toContain(`waiting: no worker is polling queue ${plan.queues.control}`);
      await expect(controlRun(c, runsDirOf(plan), plan.runId, 'pause', [], 1500)).rejects.toThrow(`no worker seems to serve ${plan.queues.control}`);
    } finally {
      await h.terminate('test over');
    }
  });
});
