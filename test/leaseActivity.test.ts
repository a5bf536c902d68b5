// The stage-folder lease in the stage activity and the stage process (fixture stages, no server): nothing in the folder
// is touched before the lease is held, a live holder is waited for and then reported, a dead one taken over, and an
// orphaned attempt (its lease taken over) stops writing, from the Node side and from the Python side alone.
import { mkdir, readdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createStageActivities } from '../activities/stages';
import { PythonStageError, runPythonStage } from '../activities/pythonStage';
import { currentLease, keepRenewed, newOwner, StageLease, tryAcquire, type LeaseTiming } from '../src/stageLease';
import { projectRoot, pythonPath } from '../src/paths';
import type { StageHeartbeat, StageRequest, StageResult } from '../workflows/types';
import { fixtureScripts, tmpDir } from './helpers';

const timing: LeaseTiming = { ttlMs: 600, skewMs: 200 };
const activities = (waitMs: number) =>
  createStageActivities({ python: pythonPath(), scriptsDir: fixtureScripts, cwd: projectRoot, killGraceMs: 1000, lease: { ...timing, renewMs: 100, pollMs: 50, waitMs } });

function start(req: StageRequest, waitMs = 5_000, attempt = 1): { done: Promise<{ result?: StageResult; error?: unknown }>; beats: StageHeartbeat[] } {
  const env = new MockActivityEnvironment({ attempt });
  const beats: StageHeartbeat[] = [];
  env.on('heartbeat', (d: unknown) => beats.push(d as StageHeartbeat));
  const acts = activities(waitMs);
  const done = env.run((r: StageRequest) => acts.runStage(r), req).then((result) => ({ result: result as StageResult }), (error: unknown) => ({ error }));
  return { done, beats };
}

async function request(fixture: Record<string, unknown> = {}): Promise<{ req: StageRequest; outputDir: string }> {
  const runDir = await tmpDir();
  const prompts = path.join(runDir, 'inputs', 'prompts.jsonl');
  await mkdir(path.dirname(prompts), { recursive: true });
  await writeFile(prompts, '{"prompt": "a"}\n');
  const old = new Date(Date.now() - 60_000);
  await utimes(prompts, old, old);
  const req: StageRequest = { runId: 'r', runDir, iteration: 1, stage: 'sample', seed: 1, params: { fixture: { sample: fixture } }, inputs: { prompts: { path: prompts } } };
  return { req, outputDir: path.join(runDir, 'iter-1', 'sample') };
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const t = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > t) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);
const invocations = async (runDir: string): Promise<string[]> => (await readFile(path.join(runDir, 'invocations.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
const held = (x: StageLease | Error): StageLease => {
  if (!(x instanceof StageLease)) throw x;
  return x;
};
/** A successor that judged the lease stale (e.g. its clock, or a partition that stopped our renewals). */
const takeOverAsStale = async (dir: string): Promise<StageLease> => held(await tryAcquire(dir, newOwner({ attempt: 2 }), timing, () => Date.now() + 60_000));

describe('stage lease in the stage activity', () => {
  it('a live holder is waited for and nothing in the folder is touched; once it dies its lease is taken over', async () => {
    const { req, outputDir } = await request();
    await mkdir(path.join(outputDir, 'partial'), { recursive: true });
    await writeFile(path.join(outputDir, 'partial', '.spec-hash'), 'another spec\n');
    await writeFile(path.join(outputDir, 'partial', 'rows.jsonl'), 'the holder is writing this\n');
    const holder = held(await tryAcquire(outputDir, newOwner({ attempt: 1 }), timing));
    const stopHolder = keepRenewed(holder, 100, () => undefined);

    const first = start(req, 700, 2);
    const { error } = await first.done;
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect([(error as ApplicationFailure).type, (error as ApplicationFailure).nonRetryable]).toEqual(['StageLeaseHeld', false]);
    expect((error as Error).message).toContain(`pid ${process.pid}, attempt 1`);
    expect(first.beats.some((b) => b.phase === 'waiting for lease')).toBe(true);
    // No rename, no spec.json, no logs (progress.json is the live display, written from the attempt's start).
    expect((await readdir(outputDir)).filter((n) => n !== 'progress.json').sort()).toEqual(['.lease', 'partial']);
    expect(await readFile(path.join(outputDir, 'partial', 'rows.jsonl'), 'utf8')).toBe('the holder is writing this\n');
    expect(await invocations(req.runDir)).toEqual([]);

    stopHolder(); // the holder's worker dies: its lease goes stale after ttl + skew
    const second = start(req, 5_000, 3);
    const r = await second.done;
    expect(r.error).toBeUndefined();
    expect(r.result?.skipped).toBe(false);
    expect((await readdir(outputDir)).some((n) => n.startsWith('partial.stale-'))).toBe(true); // set aside after the takeover
    const rec = await currentLease(outputDir);
    expect([rec?.generation, rec?.released, rec?.tookOver?.owner.token]).toEqual([2, true, holder.token]);
  });

  it('a holder that finished while we waited: its manifest proves the stage done, nothing is redone', async () => {
    const { req, outputDir } = await request();
    expect((await start(req).done).result?.skipped).toBe(false);
    await rename(path.join(outputDir, 'manifest.json'), path.join(outputDir, 'manifest.later'));
    const holder = held(await tryAcquire(outputDir, newOwner({ attempt: 1 }), timing));
    const stopHolder = keepRenewed(holder, 100, () => undefined);
    const waiting = start(req, 10_000, 2);
    await until('the attempt to wait for the lease', () => waiting.beats.some((b) => b.phase === 'waiting for lease'));
    await rename(path.join(outputDir, 'manifest.later'), path.join(outputDir, 'manifest.json')); // the holder's last write
    stopHolder();
    await holder.release();
    const r = await waiting.done;
    expect(r.error).toBeUndefined();
    expect(r.result?.skipped).toBe(true);
    expect(await invocations(req.runDir)).toHaveLength(1);
  });

  it('an orphaned attempt whose lease was taken over stops its stage process and fails retryably, writing no manifest', async () => {
    const { req, outputDir } = await request({ sleep_s: 30 });
    const orphan = start(req);
    await until('the stage process to start', async () => (await invocations(req.runDir)).length === 1);
    await until('progress', () => orphan.beats.some((b) => b.phase === 'running' && b.done > 0));
    const successor = await takeOverAsStale(outputDir);
    const t0 = Date.now();
    const { error } = await orphan.done;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect([(error as ApplicationFailure).type, (error as ApplicationFailure).nonRetryable]).toEqual(['StageLeaseLost', false]);
    expect((error as Error).message).toContain('attempt 2 (generation 2)');
    const pid = Number((await invocations(req.runDir))[0]!.split(' ')[3]);
    expect(() => process.kill(pid, 0)).toThrow(); // the stage process is gone
    expect(await exists(path.join(outputDir, 'manifest.json'))).toBe(false);
    expect(await successor.holds()).toBe(true); // the orphan did not release (or touch) the successor's lease
  });

  it('the stage process alone stops writing when its lease is taken over (no Node renewer), and refuses to start without it', async () => {
    const { req, outputDir } = await request({ sleep_s: 30 });
    await mkdir(outputDir, { recursive: true });
    const specPath = path.join(outputDir, 'spec.json');
    await writeFile(specPath, JSON.stringify({ stage: 'sample', runId: 'r', iteration: 1, seed: 1, params: req.params, inputs: {}, outputDir }));
    const mine = held(await tryAcquire(outputDir, newOwner({ attempt: 1 }), timing));
    const script = path.join(fixtureScripts, 'sample.py');
    const stage = runPythonStage({ python: pythonPath(), script, specPath, cwd: projectRoot, killGraceMs: 500, env: mine.env(200) });
    await until('the stage process to start', async () => (await invocations(req.runDir)).length === 1);
    await takeOverAsStale(outputDir);
    const t0 = Date.now();
    const err = await stage.then(() => undefined, (e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(err).toBeInstanceOf(PythonStageError);
    expect((err as PythonStageError).stderrTail.join('\n')).toContain('was taken over while it ran by host');
    expect(await exists(path.join(outputDir, 'manifest.json'))).toBe(false);

    // Started with a lease that is no longer the owner's: exits before writing anything.
    const late = await runPythonStage({ python: pythonPath(), script, specPath, cwd: projectRoot, env: mine.env(200) }).then(() => undefined, (e: unknown) => e);
    expect((late as PythonStageError).exitCode).toBe(1);
    expect((late as PythonStageError).message).toContain('was taken over before this stage started');
    expect(await invocations(req.runDir)).toHaveLength(1);
  });
});
