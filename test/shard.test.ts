// Sharded stages (issue 15) with fixture stages that seed each batch from its content, as the real ones do: the shards
// of a run spread over two gpu worker processes, the merged outputs equal a one-worker unsharded run byte for byte, and
// killing one worker mid-shard costs only that shard's unfinished batches. (The real sample/score scripts' byte
// identity is proven in test/python/test_shards.py on the tiny model.)
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { inject } from 'vitest';
import type { Client } from '@temporalio/client';
import { projectRoot } from '../src/paths';
import type { alignmentRun } from '../workflows/alignmentRun';
import { planShards } from '../activities/planShards';
import { autoShardCount, shardDirName } from '../workflows/plan';
import type { RunPlan } from '../workflows/types';
import { validateConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { baseConfig, client as connect, fixturePlan, fixtureWorkers, tmpDir } from './helpers';

let c: Client;
let close: () => Promise<void>;
beforeAll(async () => ({ client: c, close } = await connect()));
afterAll(async () => close());

const FIXTURE = (perPromptS: number) => ({
  sample: { sharded: true, prompts: 24, batch: 4, per_prompt_s: perPromptS },
  score: { sharded: true, prompts: 24, batch: 4, per_prompt_s: perPromptS },
  evaluate: { sharded: true, prompts: 24, batch: 4, per_prompt_s: perPromptS },
});

async function plan(dir: string, runId: string, perPromptS: number, shards?: { sample: number; score: number; evaluate?: number }): Promise<RunPlan> {
  const p = await fixturePlan(dir, runId, FIXTURE(perPromptS));
  p.stages = shards?.evaluate || !shards ? ['sample', 'score', 'evaluate'] : ['sample', 'score'];
  p.iterations = 1;
  if (shards) {
    p.stagePlans.sample.shards = shards.sample;
    p.stagePlans.score.shards = shards.score;
    if (shards.evaluate) p.stagePlans.evaluate.shards = shards.evaluate;
  }
  return p;
}

const run = (p: RunPlan) =>
  c.workflow.execute<typeof alignmentRun>('alignmentRun', { workflowId: p.runId, taskQueue: p.queues.control, args: [p, { searchAttributes: false }] });

interface GpuWorker {
  pid: number | undefined;
  kill(signal: NodeJS.Signals): void;
  /** Resolves when the process has exited. */
  exited: Promise<unknown>;
}

/** A gpu worker in a process of its own (test/fixtures/gpuWorker.ts), once it polls. */
async function gpuWorker(queue: string): Promise<GpuWorker> {
  const child: ResultPromise = execa('node', ['--import', 'tsx', path.join(projectRoot, 'test', 'fixtures', 'gpuWorker.ts'), inject('temporalAddress'), queue], {
    cwd: projectRoot,
    reject: false,
    // A killed worker's stage-folder lease goes stale in seconds here, not the production 30 s + 30 s skew.
    env: { RATIOLOOP_LEASE_TTL_S: '2', RATIOLOOP_LEASE_SKEW_S: '1' },
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    void child.then((r) => reject(new Error(`gpu worker exited ${r.exitCode}: ${String(r.stderr).slice(-2000)}`)));
  });
  return { pid: child.pid, kill: (sig) => child.kill(sig), exited: child.then(() => undefined) };
}

const stageFile = (p: RunPlan, stage: string, file: string) => path.join(p.runDir, 'iter-1', stage, file);
const bytes = (p: RunPlan, stage: string, file: string) => readFile(stageFile(p, stage, file));

/** pid of the worker that ran each attempt of each shard of `stage`: [[attempt-1 pid, attempt-2 pid…], …]. */
async function shardPids(p: RunPlan, stage: string, count: number): Promise<number[][]> {
  const out: number[][] = [];
  for (let index = 0; index < count; index++) {
    const logs = path.join(p.runDir, 'iter-1', stage, shardDirName({ index, count }), 'logs');
    const files = (await readdir(logs)).filter((f) => f.endsWith('.worker.json')).sort();
    out.push(await Promise.all(files.map(async (f) => (JSON.parse(await readFile(path.join(logs, f), 'utf8')) as { pid: number }).pid)));
  }
  return out;
}

/** "<stage> <shard> <batch> <pid>" lines: every batch a fixture shard finished, by the stage process that ran it. */
async function batches(p: RunPlan): Promise<string[][]> {
  return (await readFile(path.join(p.runDir, 'batches.log'), 'utf8')).trim().split('\n').map((l) => l.split(' '));
}

describe('sharded stages', () => {
  test('shards spread over two worker processes and merge to the unsharded bytes', async () => {
    const dir = await tmpDir();
    const one = await plan(dir, 'shard-one', 0.02);
    const ws = await fixtureWorkers(one);
    try {
      expect((await run(one)).status).toBe('completed');
    } finally {
      await ws.shutdown();
    }

    const many = await plan(dir, 'shard-many', 0.1, { sample: 4, score: 3, evaluate: 2 });
    const local = await fixtureWorkers(many, ['control', 'cpu']);
    const gpus = await Promise.all([gpuWorker(many.queues.gpu), gpuWorker(many.queues.gpu)]);
    try {
      const r = await run(many);
      expect(r.status).toBe('completed');
      expect(r.stages.find((s) => s.stage === 'sample')?.note).toBe('4 shards');
    } finally {
      for (const g of gpus) g.kill('SIGTERM');
      await Promise.all(gpus.map((g) => g.exited));
      await local.shutdown();
    }
    for (const [stage, file] of [['sample', 'samples.jsonl'], ['score', 'scores.jsonl'], ['evaluate', 'summary.json']] as const) {
      expect((await bytes(many, stage, file)).equals(await bytes(one, stage, file))).toBe(true);
    }
    const pids = new Set([...(await shardPids(many, 'sample', 4)), ...(await shardPids(many, 'score', 3)), ...(await shardPids(many, 'evaluate', 2))].flat());
    expect(pids.size).toBeGreaterThanOrEqual(2);
    // Every batch ran once, and the merge ran on the cpu queue (this process), not on a gpu worker…
    const ran = (await batches(many)).map(([stage, , b]) => `${stage ?? ''}:${b ?? ''}`);
    expect(ran.sort()).toEqual([...Array(6).keys()].flatMap((b) => [`sample:${b}`, `score:${b}`, `evaluate:${b}`]).sort());
    type WorkerRecord = { pid: number; taskQueue: string };
    const merge = JSON.parse(await readFile(stageFile(many, 'sample', 'logs/attempt-1.worker.json'), 'utf8')) as WorkerRecord;
    expect(merge).toMatchObject({ pid: process.pid, taskQueue: many.queues.cpu });
    // …except evaluate's, which judges: on its own (gpu) queue, so on a gpu worker.
    const judging = JSON.parse(await readFile(stageFile(many, 'evaluate', 'logs/attempt-1.worker.json'), 'utf8')) as WorkerRecord;
    expect(judging.taskQueue).toBe(many.queues.gpu);
    expect(judging.pid).not.toBe(process.pid);
  });

  test('a worker killed mid-shard costs only its unfinished batches', async () => {
    const dir = await tmpDir();
    const p = await plan(dir, 'shard-kill', 0.25, { sample: 2, score: 1 });
    p.stagePlans.sample.options = { ...p.stagePlans.sample.options, heartbeatTimeout: '4s' };
    const local = await fixtureWorkers(p, ['control', 'cpu']);
    const gpus = await Promise.all([gpuWorker(p.queues.gpu), gpuWorker(p.queues.gpu)]);
    let third: GpuWorker | undefined;
    try {
      const handle = await c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: p.runId, taskQueue: p.queues.control, args: [p, { searchAttributes: false }] });
      // Wait until each shard has finished a batch, then kill the worker running shard 0 (kill -9: no goodbye).
      const until = Date.now() + 60_000;
      let pids: number[][] = [];
      for (;;) {
        const done = await batches(p).catch(() => []);
        if ([0, 1].every((s) => done.some(([stage, shard]) => stage === 'sample' && Number(shard) === s))) break;
        if (Date.now() > until) throw new Error('shards did not start');
        await new Promise((r) => setTimeout(r, 200));
      }
      pids = await shardPids(p, 'sample', 2);
      const victim = gpus.find((g) => g.pid === pids[0]?.[0]);
      expect(victim).toBeDefined();
      victim?.kill('SIGKILL');
      third = await gpuWorker(p.queues.gpu); // the pool gets a replacement, as it would
      expect((await handle.result()).status).toBe('completed');
      const after = await shardPids(p, 'sample', 2);
      expect(after[0]).toHaveLength(2); // shard 0 ran again, elsewhere
      expect(after[0]?.[1]).not.toBe(pids[0]?.[0]);
      expect(after[1]).toHaveLength(1); // shard 1 never noticed
    } finally {
      for (const g of [...gpus, ...(third ? [third] : [])]) g.kill('SIGTERM');
      await Promise.allSettled([...gpus, ...(third ? [third] : [])].map((g) => g.exited));
      await local.shutdown();
    }
    // Each batch ran once, except at most the one shard 0 was in the middle of when its worker died.
    const ran = (await batches(p)).filter(([stage]) => stage === 'sample').map(([, shard, b]) => `${shard ?? ''}:${b ?? ''}`);
    const counts = new Map<string, number>();
    for (const k of ran) counts.set(k, (counts.get(k) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(['0:0', '0:1', '0:2', '1:3', '1:4', '1:5']);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    // …and shard 0's first batches stayed done: two stage processes (the killed attempt's, the retry's) share its batches.
    expect(new Set((await batches(p)).filter(([stage, shard]) => stage === 'sample' && shard === '0').map(([, , , pid]) => pid)).size).toBe(2);
    const rows = (await bytes(p, 'sample', 'samples.jsonl')).toString().trim().split('\n');
    expect(rows).toHaveLength(24);
  });

  test('a stage finished as a whole is done for its shards too (resumed with shards, or with another K)', async () => {
    const dir = await tmpDir();
    const p = await plan(dir, 'shard-again', 0);
    const ws = await fixtureWorkers(p);
    try {
      expect((await run(p)).status).toBe('completed'); // unsharded
      const before = (await batches(p)).length;
      const sharded: RunPlan = { ...p, stagePlans: { ...p.stagePlans, sample: { ...p.stagePlans.sample, shards: 3 }, score: { ...p.stagePlans.score, shards: 2 }, evaluate: { ...p.stagePlans.evaluate, shards: 2 } } };
      // the same run resumed (a new workflow execution over the same run folder and spec)
      const r = await c.workflow.execute<typeof alignmentRun>('alignmentRun', { workflowId: `${p.runId}-resumed`, taskQueue: p.queues.control, args: [sharded, { searchAttributes: false }] });
      expect(r.stages.map((x) => x.status)).toEqual(['skipped', 'skipped', 'skipped']);
      expect((await batches(p)).length).toBe(before); // no shard ran a batch
    } finally {
      await ws.shutdown();
    }
  });

  test('shards is planned beside the params, never in them (the spec hash is the unsharded one)', async () => {
    const dir = await tmpDir();
    const raw = await baseConfig(dir);
    const { config } = validateConfig({ ...raw, sample: { shards: 4 }, score: { shards: 'auto' } });
    if (!config) throw new Error('config rejected');
    const p = resolvePlan(config, { configPath: path.join(dir, 'c.yaml'), runId: 'r' });
    expect([p.stagePlans.sample.shards, p.stagePlans.score.shards, p.stagePlans.train.shards]).toEqual([4, 'auto', undefined]);
    expect('shards' in p.stagePlans.sample.params || 'shards' in p.stagePlans.score.params).toBe(false);
    const plain = validateConfig(raw).config;
    if (!plain) throw new Error('config rejected');
    const q = resolvePlan(plain, { configPath: path.join(dir, 'c.yaml'), runId: 'r' });
    expect(q.stagePlans.sample.params).toEqual(p.stagePlans.sample.params);
    expect('shards' in q.stagePlans.sample).toBe(false);
    for (const bad of [0, 1.5, 'many']) expect(validateConfig({ ...raw, sample: { shards: bad } }).issues.map((i) => i.path)).toContain('sample.shards');
    const ev = validateConfig({ ...raw, evaluate: { ...(raw.evaluate as object), shards: 2 } }).config;
    if (!ev) throw new Error('config rejected');
    const e = resolvePlan(ev, { configPath: path.join(dir, 'c.yaml'), runId: 'r' });
    expect(e.stagePlans.evaluate.shards).toBe(2);
    expect(e.stagePlans.evaluate.params).toEqual(q.stagePlans.evaluate.params);
  });

  test('auto: one shard per gpu worker polling, at least 16 prompts each', () => {
    expect(autoShardCount(1000, 4)).toBe(4);
    expect(autoShardCount(40, 4)).toBe(2);
    expect(autoShardCount(10, 4)).toBe(1);
    expect(autoShardCount(undefined, 3)).toBe(3);
    expect(autoShardCount(1000, undefined)).toBe(1);
    expect(autoShardCount(1_000_000, 500)).toBe(64);
  });

  test('planShards counts the prompts file (cut by prompts.limit) and the workers polling', async () => {
    const file = path.join(await tmpDir(), 'prompts.jsonl');
    await writeFile(file, `${'{"id": 1}\n'.repeat(70)}\n  \n{"id": "last"}`); // blank lines do not count; no final newline
    const polling = (n: number) => () => Promise.resolve(n);
    expect(await planShards({ stage: 'sample', inputs: { prompts: { path: file } }, params: {}, queue: 'q' }, polling(8))).toEqual({ count: 4, prompts: 71, workers: 8 });
    expect(await planShards({ stage: 'sample', inputs: { prompts: { path: file } }, params: { prompts: { limit: 40 } }, queue: 'q' }, polling(8))).toMatchObject({ count: 2, prompts: 40 });
    expect(await planShards({ stage: 'score', inputs: { samples: { path: file } }, params: {}, queue: 'q' })).toEqual({ count: 1, prompts: 71 });
    // evaluate: its questions when params.limit bounds every benchmark it runs, else unknown (one shard per worker)
    const ev = (params: Record<string, unknown>) => planShards({ stage: 'evaluate', inputs: {}, params, queue: 'q' }, polling(8));
    expect(await ev({ benchmarks: ['arena_hard', 'mt_bench'], limit: 20 })).toEqual({ count: 2, prompts: 40, workers: 8 });
    expect(await ev({ limit: { arena_hard: 500, alpaca_eval: 805, mt_bench: 80 } })).toMatchObject({ count: 8, prompts: 1385 });
    expect(await ev({ limit: { arena_hard: 5 } })).toEqual({ count: 8, workers: 8 });
  });
});
