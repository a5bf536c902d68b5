// Multi-node training as a gang, on one machine: two `ratioloop worker` processes pretend to be two hosts
// ($RATIOLOOP_HOSTNAME) sharing the run folder; the workflow claims both, runs one rank on each host's own queue and the
// real train stage trains the tiny model over gloo (2 machines × 1 CPU process). One rank's "machine" dies mid-training
// (its worker and stage process group, kill -9): the gang is cancelled and retried as a whole, on live hosts, from the
// last checkpoint, and ends with an undisturbed run's checkpoint steps and losses.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Client } from '@temporalio/client';
import type { alignmentRun } from '../workflows/alignmentRun';
import type { RunPlan, StageResult } from '../workflows/types';
import { validateConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { projectRoot, pythonPath } from '../src/paths';
import { hostQueueName } from '../src/queues';
import { writeJsonAtomic, type RunRecord } from '../src/runStore';
import { startWorkers, type WorkerSet } from '../src/worker';
import { baseConfig, client, fixturePlan, fixtureScripts, runRecord, settings, tmpDir, uniqueQueues } from './helpers';
import { exists, killChildren, waitFor, worker } from './processes';

const PAIRS = 8;
let models: string;
let c: Client;
let close: () => Promise<void>;

beforeAll(async () => {
  models = await tmpDir('ratioloop-gang-models-');
  await execa(pythonPath(), ['-m', 'ratioloop_py.tiny', '--out', path.join(models, 'tiny'), '--seed', '1'], { cwd: path.join(projectRoot, 'scripts') });
  ({ client: c, close } = await client());
});
afterAll(async () => {
  await killChildren();
  await close();
});

interface Setup { dir: string; config: string; plan: RunPlan; pairs: StageResult }

/** A config training on 2 machines, its plan (train only, the pairs given as this iteration's done pairs stage) and run.json. */
async function setup(runId: string): Promise<Setup> {
  const dir = await tmpDir('ratioloop-gang-');
  const words = ['sea', 'book', 'trip', 'lock', 'house', 'sign', 'stroke', 'sum'];
  const say = (i: number, k: number) => Array.from({ length: k }, (_, j) => words[(i * 3 + j) % words.length]).join(' ');
  const rows = Array.from({ length: PAIRS }, (_, i) => ({
    prompt: [{ role: 'user', content: say(i, 5) }], chosen: [{ role: 'assistant', content: say(i + 1, 3) }], rejected: [{ role: 'assistant', content: say(i + 2, 4) }],
    score_chosen: 1, score_rejected: 0, margin: 1, prompt_id: String(i), domain: 'chat',
  }));
  const pairsFile = path.join(dir, 'pairs.jsonl');
  await writeFile(pairsFile, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  await writeFile(path.join(dir, 'prompts.jsonl'), JSON.stringify({ id: 'p1', messages: [{ role: 'user', content: 'hi' }] }) + '\n');
  const tiny = path.join(models, 'tiny');
  const raw = {
    name: 'gang', seed: 5, iterations: 1, runsDir: path.join(dir, 'runs'),
    models: { policy: { path: tiny }, strong: { path: tiny }, weak: { path: tiny }, router: { path: tiny }, judge: { path: tiny } },
    prompts: { path: path.join(dir, 'prompts.jsonl') },
    // 8 pairs over 2 processes, batch 1: 4 steps, a checkpoint at each.
    train: { per_device_train_batch_size: 1, max_length: 64, max_prompt_length: 32, save_steps: 1, learning_rate: 1e-4, launch: { num_machines: 2, num_processes: 2 } },
    evaluate: { enabled: false },
    taskQueues: uniqueQueues(),
    timeouts: { default: { heartbeat: '5s', initialInterval: '1s', maxAttempts: 3 } },
  };
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, stringify(raw));
  const { config: cfg, issues } = validateConfig(raw);
  if (!cfg) throw new Error(issues.map((i) => `${i.path}: ${i.message}`).join('\n'));
  const plan = resolvePlan(cfg, { configPath: config, runId });
  plan.stages = ['train'];
  const now = new Date().toISOString();
  const rec: RunRecord = { runId, createdAt: now, updatedAt: now, status: 'created', configHash: plan.configHash, config: cfg, plan, versions: {}, workflowRunIds: [], stages: [] };
  await writeJsonAtomic(path.join(plan.runDir, 'run.json'), rec);
  const pairs: StageResult = { stage: 'pairs', iteration: 1, outputs: { pairs: { name: 'pairs', path: pairsFile, sha256: '' } }, metrics: {}, skipped: true, durationMs: 0 };
  return { dir, config, plan, pairs };
}

/** A gpu worker process that is host `name` (its own host queue), reachable at 127.0.0.1. */
const host = (s: Setup, name: string, env: Record<string, string> = {}) =>
  worker(inject('temporalAddress'), 'gpu', s.config, { RATIOLOOP_HOSTNAME: name, RATIOLOOP_GANG_ADDRESS: '127.0.0.1', RATIOLOOP_THREADS: '1', ...env });

const start = (s: Setup) =>
  c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: s.plan.runId, taskQueue: s.plan.queues.control, args: [s.plan, { searchAttributes: false, from: { iteration: 1, done: { pairs: s.pairs } } }] });

const trainDir = (s: Setup) => path.join(s.plan.runDir, 'iter-1', 'train');
const checkpointSteps = async (s: Setup) =>
  (await readdir(path.join(trainDir(s), 'partial', 'checkpoints'))).map((n) => /^checkpoint-(\d+)$/.exec(n)?.[1]).filter((n): n is string => n !== undefined).map(Number).sort((a, b) => a - b);
const attemptRecord = async (s: Setup, name: string) => JSON.parse(await readFile(path.join(trainDir(s), 'logs', name), 'utf8')) as { machine: string; taskQueue: string; gang: { rank: number; machines: number; attempt: number } };

/** The gang's train spec run once, undisturbed, on one machine with the same ranks (2 processes): its folder. */
async function undisturbedRun(s: Setup): Promise<string> {
  const spec = JSON.parse(await readFile(path.join(trainDir(s), 'spec.json'), 'utf8')) as { params: { launch: Record<string, unknown> }; outputDir: string };
  const outputDir = path.join(s.dir, 'undisturbed');
  const file = path.join(outputDir, 'spec.json');
  await writeJsonAtomic(file, { ...spec, params: { ...spec.params, launch: { ...spec.params.launch, num_machines: 1 } }, outputDir });
  await execa(pythonPath(), [path.join(projectRoot, 'scripts', 'train_simpo.py'), '--spec', file], { cwd: projectRoot, env: { RATIOLOOP_NO_LOCK: '1', RATIOLOOP_THREADS: '1' } });
  return outputDir;
}

describe('multi-node training as a gang (worker processes as hosts, tiny model, gloo)', () => {
  let control: WorkerSet | undefined;
  afterAll(async () => control?.shutdown());

  // One run covers both the gang and its retry; the undisturbed run to compare with is the same spec on one machine
  // with the same 2 ranks (a second gang would cost another 35 s of CI).
  it('claims 2 hosts, a rank on each host queue; a rank’s machine dies mid-training: the gang reruns on live hosts from its checkpoint', async () => {
    const s = await setup('gang-killed');
    control = await startWorkers({ settings: settings(), roles: ['control', 'cpu'], queues: s.plan.queues });
    // Steps slow enough that the kill lands after the first checkpoint and before the last.
    const slow = { RATIOLOOP_TEST_STEP_DELAY_S: '1' };
    const hosts = { 'host-a': host(s, 'host-a', slow), 'host-b': host(s, 'host-b', slow) };
    const h = await start(s);
    const rank1 = path.join(trainDir(s), 'logs', 'attempt-1.rank1.worker.json');
    await waitFor('the first checkpoint', async () => (await exists(rank1)) && (await checkpointSteps(s).catch(() => [])).length > 0, 120_000);
    expect(await exists(path.join(trainDir(s), 'manifest.json'))).toBe(false);
    const first = [await attemptRecord(s, 'attempt-1.worker.json'), await attemptRecord(s, 'attempt-1.rank1.worker.json')];
    expect(first.map((r) => r.gang)).toEqual([{ rank: 0, machines: 2, attempt: 1 }, { rank: 1, machines: 2, attempt: 1 }]);
    expect(first.map((r) => r.machine).sort()).toEqual(['host-a', 'host-b']);
    for (const r of first) expect(r.taskQueue).toBe(hostQueueName(s.plan.queues.gpu, r.machine));
    const victim = first[1]!.machine as keyof typeof hosts;
    // The machine dies: its worker and the stage process group it started (the ranks die with their launcher).
    const pid = hosts[victim].pid!;
    const kids = (await execa('pgrep', ['-P', String(pid)], { reject: false })).stdout.split('\n').filter(Boolean).map(Number);
    hosts[victim].kill('SIGKILL');
    for (const k of kids) {
      try {
        process.kill(-k, 'SIGKILL');
      } catch {
        // not a group leader, or gone already
      }
    }
    const spare = host(s, 'host-c', slow);
    try {
      const res = await h.result();
      expect(res.status, res.error).toBe('completed');
      const again = [await attemptRecord(s, 'attempt-2.worker.json'), await attemptRecord(s, 'attempt-2.rank1.worker.json')];
      expect(again.map((r) => r.gang.attempt)).toEqual([2, 2]);
      expect(again.map((r) => r.machine).sort()).toEqual(['host-a', 'host-b', 'host-c'].filter((m) => m !== victim));
      // Rank 0's manifest is the stage's; it resumed, and the steps went on where the checkpoint left them.
      const manifest = JSON.parse(await readFile(path.join(trainDir(s), 'manifest.json'), 'utf8')) as { outputs: { name: string }[]; metrics: { resumed_from_step?: number } };
      expect(manifest.outputs.map((o) => o.name).sort()).toEqual(['metrics', 'model']);
      expect(manifest.metrics.resumed_from_step).toBeGreaterThan(0);
      const steps = (await readFile(path.join(trainDir(s), 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
      expect(steps).toEqual([1, 2, 3, 4]);
      // An undisturbed run's checkpoints: one per step (save_steps 1) of 4 (8 pairs / 2 processes), the newest 2 kept.
      expect(await checkpointSteps(s)).toEqual([3, 4]);
      // …and an undisturbed run's numbers: the same spec on one machine with the same 2 ranks, never killed, has the
      // same loss at every step (steps 3–4 ran after the gang's resume).
      const undisturbed = await undisturbedRun(s);
      const losses = async (dir: string) => (await readFile(path.join(dir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
      const [gang, alone] = [await losses(trainDir(s)), await losses(undisturbed)];
      expect(alone).toHaveLength(4);
      gang.forEach((x, i) => expect(Math.abs(x - alone[i]!)).toBeLessThan(1e-5));
      expect((await readdir(path.join(undisturbed, 'partial', 'checkpoints'))).sort()).toEqual(['checkpoint-3', 'checkpoint-4']);
      // Resumed, the finished stage is skipped by its done-check alone: no machine is claimed, no rank runs.
      const resumed = await c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: `${s.plan.runId}-resumed`, taskQueue: s.plan.queues.control, args: [s.plan, { searchAttributes: false, from: { iteration: 1, done: { pairs: s.pairs } } }] });
      expect((await resumed.result()).stages.find((x) => x.stage === 'train')?.status).toBe('skipped');
      const names = ((await resumed.fetchHistory()).events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter((n) => n === 'claimMachine' || n === 'runStage');
      expect(names).toEqual(['runStage']);
    } finally {
      for (const w of [...Object.values(hosts), spare]) w.kill('SIGTERM');
      await Promise.allSettled([...Object.values(hosts), spare]);
      await control.shutdown();
      control = undefined;
    }
  }, 240_000);
});

describe('gang failures (fixture stages, in-process workers as hosts)', () => {
  it('bad input on the ranks fails the stage at once: one gang attempt, never claimed again', async () => {
    const dir = await tmpDir();
    const raw = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false }, train: { launch: { num_machines: 2, num_processes: 2 } } };
    const plan = await fixturePlan(dir, 'gang-bad-input', { train: { bad_input: 'pairs.jsonl:1: no prompt' } }, raw);
    plan.stages = ['train'];
    await writeJsonAtomic(path.join(plan.runDir, 'run.json'), { ...(await runRecord(plan)), plan });
    const opts = { settings: settings(), queues: plan.queues, stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } };
    const sets = [
      await startWorkers({ ...opts, roles: ['control', 'cpu'] }),
      ...(await Promise.all(['fx-a', 'fx-b'].map((hostname) => startWorkers({ ...opts, roles: ['gpu'], hostQueue: true, hostname })))),
    ];
    try {
      const pairs: StageResult = { stage: 'pairs', iteration: 1, outputs: { pairs: { name: 'pairs', path: path.join(dir, 'prompts.jsonl'), sha256: '' } }, metrics: {}, skipped: true, durationMs: 0 };
      const h = await c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan, { searchAttributes: false, from: { iteration: 1, done: { pairs } } }] });
      await expect(h.result()).rejects.toThrow();
      const train = (await runRecord(plan)).stages.find((x) => x.stage === 'train');
      expect(train?.status).toBe('failed');
      expect(train?.error).toContain('pairs.jsonl:1: no prompt');
      const logs = await readdir(path.join(plan.runDir, 'iter-1', 'train', 'logs'));
      expect(logs.filter((n) => n.endsWith('.worker.json')).sort()).toEqual(['attempt-1.rank1.worker.json', 'attempt-1.worker.json']);
      // The done-check, two claims, two ranks, nothing after: bad input is not retried on other machines.
      const events = (await h.fetchHistory()).events ?? [];
      const scheduled = events.map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter((n) => n === 'claimMachine' || n === 'runStage');
      expect(scheduled).toEqual(['runStage', 'claimMachine', 'claimMachine', 'runStage', 'runStage']);
    } finally {
      await Promise.all(sets.map((w) => w.shutdown()));
    }
  });
});
