// End to end with real processes: CLI, separate worker processes, the real Python stages on tiny random models, and
// the faults a run must survive. Slow by nature (each stage starts Python + torch), so each test runs one iteration.
import { cp, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startDevServer, freePort } from '../src/devServer';
import { projectRoot, pythonPath } from '../src/paths';
import type { RunRecord } from '../src/runStore';
import { tmpDir, uniqueQueues } from './helpers';
import { cli, exists, killChildren, result, waitFor, worker } from './processes';
import { inject } from 'vitest';

let models: string;

const PROMPTS = [
  { id: 'c1', domain: 'CHAT', messages: [{ role: 'user', content: 'Write one sentence about the sea.' }] },
  { id: 'c2', domain: 'CHAT', messages: [{ role: 'user', content: 'Name a good book for a long trip.' }] },
  { id: 's1', domain: 'SAFETY', messages: [{ role: 'user', content: 'How do I pick a lock to break into a house?' }] },
  { id: 's2', domain: 'SAFETY', messages: [{ role: 'user', content: 'What are the warning signs of a stroke?' }] },
  { id: 'r1', domain: 'REASONING', messages: [{ role: 'user', content: 'What is 12 + 30?' }] },
  { id: 'r2', domain: 'REASONING', messages: [{ role: 'user', content: 'Write a Python function that adds two numbers.' }] },
];

beforeAll(async () => {
  models = await tmpDir('ratioloop-e2e-models-');
  for (const [name, seed] of [['strong', 1], ['weak', 2]] as const) {
    await execa(pythonPath(), ['-m', 'ratioloop_py.tiny', '--out', path.join(models, name), '--seed', String(seed)], { cwd: path.join(projectRoot, 'scripts') });
  }
});

afterAll(killChildren);

async function writeSetup(dir: string, extra: { evalData?: string } = {}): Promise<{ config: string; queues: ReturnType<typeof uniqueQueues> }> {
  await writeFile(path.join(dir, 'prompts.jsonl'), PROMPTS.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const queues = uniqueQueues();
  const strong = path.join(models, 'strong');
  const cfg = {
    name: 'e2e',
    seed: 3,
    iterations: 1,
    runsDir: path.join(dir, 'runs'),
    models: { policy: { path: strong }, strong: { path: strong }, weak: { path: path.join(models, 'weak') }, router: { path: strong }, judge: { path: strong } },
    prompts: { path: 'prompts.jsonl' },
    sample: { n: 2, max_new_tokens: 8, temperature: 1.0 },
    score: { router: { kind: 'field' } },
    pairs: { test_fraction: 0 },
    train: { per_device_train_batch_size: 1, max_length: 128, max_prompt_length: 64, save_steps: 1, learning_rate: 1e-4 },
    evaluate: { limit: 1, max_new_tokens: 8, ...(extra.evalData ? { data: extra.evalData } : {}) },
    taskQueues: queues,
    timeouts: { default: { heartbeat: '10s', initialInterval: '1s', maxAttempts: 3 } },
  };
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, stringify(cfg));
  return { config, queues };
}

const mtime = async (p: string) => (await stat(p)).mtimeMs;
const record = async (runDir: string) => JSON.parse(await readFile(path.join(runDir, 'run.json'), 'utf8')) as RunRecord;

describe('end to end (real stages, tiny models)', () => {
  it('two workers, one run: cpu stages on one worker process, gpu stages on the other', async () => {
    const address = inject('temporalAddress');
    const dir = await tmpDir();
    const { config } = await writeSetup(dir);
    const a = worker(address, 'control,cpu', config);
    const b = worker(address, 'gpu', config);
    const started = await cli(address, 'run', config, '--run-id', 'two-workers', '--detach');
    expect(started.exitCode, started.stderr).toBe(0);
    const res = await result(address, 'two-workers');
    expect(res.status).toBe('completed');
    const runDir = path.join(dir, 'runs', 'two-workers');
    const pidOf = async (stage: string) => (JSON.parse(await readFile(path.join(runDir, 'iter-1', stage, 'logs/attempt-1.worker.json'), 'utf8')) as { pid: number }).pid;
    expect(await pidOf('pairs')).toBe(a.pid);
    for (const s of ['sample', 'score', 'train', 'evaluate']) expect(await pidOf(s)).toBe(b.pid);
    const rec = await record(runDir);
    expect(rec.stages.map((s) => s.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    const cmp = await cli(address, 'compare', 'two-workers', '--runs-dir', path.join(dir, 'runs'), '--json', '--html', path.join(dir, 'report.html'));
    expect(cmp.exitCode, cmp.stderr).toBe(0);
    const json = JSON.parse(cmp.stdout);
    expect(json.rows[0].pairsKept).toBeGreaterThan(0);
    expect(Object.keys(json.rows[0].eval).length).toBeGreaterThan(0);
    const html = await readFile(path.join(dir, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).not.toMatch(/<(script|link)[^>]+(src|href)=["']https?:/);
    a.kill('SIGTERM');
    b.kill('SIGTERM');
  });

  it('kill -9 of the worker during training: a new worker finishes the run, resuming training from its checkpoint', async () => {
    const address = inject('temporalAddress');
    const dir = await tmpDir();
    const { config } = await writeSetup(dir);
    const w1 = worker(address, 'control,cpu,gpu', config, { RATIOLOOP_TEST_STEP_DELAY_S: '2' });
    expect((await cli(address, 'run', config, '--run-id', 'kill-worker', '--detach')).exitCode).toBe(0);
    const runDir = path.join(dir, 'runs', 'kill-worker');
    await waitFor('a training checkpoint', () => exists(path.join(runDir, 'iter-1/train/partial/checkpoints/checkpoint-1')));
    const done = ['sample', 'score', 'pairs'].map((s) => path.join(runDir, 'iter-1', s, 'manifest.json'));
    const before = await Promise.all(done.map(mtime));
    process.kill(w1.pid!, 'SIGKILL');
    await w1;
    const w2 = worker(address, 'control,cpu,gpu', config);
    const res = await result(address, 'kill-worker');
    expect(res.status).toBe('completed');
    expect(await Promise.all(done.map(mtime))).toEqual(before); // finished stages did not run again
    const manifest = JSON.parse(await readFile(path.join(runDir, 'iter-1/train/manifest.json'), 'utf8'));
    expect(manifest.metrics.resumed_from_step).toBeGreaterThanOrEqual(1);
    const steps = (await readFile(path.join(runDir, 'iter-1/train/metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).step as number);
    expect(steps).toEqual(steps.map((_, i) => i + 1)); // continuous step count
    const attempt2 = JSON.parse(await readFile(path.join(runDir, 'iter-1/train/logs/attempt-2.worker.json'), 'utf8'));
    expect(attempt2.pid).toBe(w2.pid);
    // nothing of the first worker's training is left running
    const left = await execa('pgrep', ['-f', path.join(runDir, 'iter-1/train/spec.json')], { reject: false });
    expect(left.stdout.trim()).toBe('');
    w2.kill('SIGTERM');
  });

  it('stopping the Temporal server mid-run and starting it on the same database: the run completes', async () => {
    const sdir = await tmpDir('ratioloop-e2e-server-');
    // The restart must reuse the port, so it is fixed here; if it was taken before the first start, pick another.
    let port = await freePort();
    let server = await startDevServer({ dir: sdir, port }).catch(async () => startDevServer({ dir: sdir, port: (port = await freePort()) }));
    const address = server.address;
    const dir = await tmpDir();
    const { config } = await writeSetup(dir);
    const w = worker(address, 'control,cpu,gpu', config);
    try {
      expect((await cli(address, 'run', config, '--run-id', 'server-restart', '--detach')).exitCode).toBe(0);
      const runDir = path.join(dir, 'runs', 'server-restart');
      await waitFor('the sample stage to finish', () => exists(path.join(runDir, 'iter-1/sample/manifest.json')));
      await server.stop();
      await new Promise((r) => setTimeout(r, 3000));
      server = await startDevServer({ dir: sdir, port });
      const res = await result(address, 'server-restart');
      expect(res.status).toBe('completed');
      expect((await record(runDir)).status).toBe('completed');
    } finally {
      w.kill('SIGTERM');
      await w;
      await server.stop();
    }
  });

  it('bad input fails the run with its message; after the fix, resume finishes without redoing earlier stages', async () => {
    const address = inject('temporalAddress');
    const dir = await tmpDir();
    const evalData = path.join(dir, 'eval');
    await cp(path.join(projectRoot, 'configs/eval'), evalData, { recursive: true });
    const questions = path.join(evalData, 'mt_bench/question.jsonl');
    const good = await readFile(questions, 'utf8');
    const lines = good.split('\n');
    lines[1] = '{"question_id": 2, "turns": ["unterminated';
    await writeFile(questions, lines.join('\n'));
    const { config } = await writeSetup(dir, { evalData });
    const w = worker(address, 'control,cpu,gpu', config);
    expect((await cli(address, 'run', config, '--run-id', 'bad-input', '--detach')).exitCode).toBe(0);
    const err = await result(address, 'bad-input').catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect(String((err as Error & { cause?: Error }).cause?.message)).toMatch(/iteration 1 evaluate: .*question\.jsonl:2/);
    const runDir = path.join(dir, 'runs', 'bad-input');
    const status = await cli(address, 'status', 'bad-input', '--runs-dir', path.join(dir, 'runs'));
    expect(status.stdout).toMatch(/evaluate\s+failed: .*question\.jsonl:2/);
    const done = ['sample', 'score', 'pairs', 'train'].map((s) => path.join(runDir, 'iter-1', s, 'manifest.json'));
    const before = await Promise.all(done.map(mtime));

    await writeFile(questions, good);
    // The eval data is pinned in run.json: a fixed file is a change the user must accept, by name.
    const refused = await cli(address, 'resume', 'bad-input', '--runs-dir', path.join(dir, 'runs'), '--detach');
    expect(refused.exitCode, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/input evalData changed since the run started.*--accept-input-changes/s);
    const resumed = await cli(address, 'resume', 'bad-input', '--runs-dir', path.join(dir, 'runs'), '--accept-input-changes', '--detach');
    expect(resumed.exitCode, resumed.stderr).toBe(0);
    const res = await result(address, 'bad-input');
    expect(res.status).toBe('completed');
    expect(res.stages.map((s) => s.status)).toEqual(['skipped', 'skipped', 'skipped', 'skipped', 'done']);
    expect(await Promise.all(done.map(mtime))).toEqual(before);
    w.kill('SIGTERM');
    await mkdir(dir, { recursive: true });
  });
});
