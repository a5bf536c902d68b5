// Static inputs pinned in run.json (src/inputPins.ts): pinned once, checked by every stage attempt (BadInput naming
// the input) and by resume (a usage error before anything starts), re-pinned only on request; resume --verify reads
// every byte. Fixture stages, the test server only for resume.
import { appendFile, readFile, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { WorkflowNotFoundError } from '@temporalio/client';
import { execa } from 'execa';
import { describe, expect, inject, it } from 'vitest';
import { createStageActivities } from '../activities/stages';
import { resumeRun, UserError } from '../src/client/runs';
import { pinInputs, pinRunInputs, staticInputPaths, type InputPins } from '../src/inputPins';
import { projectRoot, pythonPath } from '../src/paths';
import { readRun, updateRun } from '../src/runStore';
import type { RunPlan, StageRequest } from '../workflows/types';
import { client, fixturePlan, fixtureScripts, tmpDir } from './helpers';

const activities = createStageActivities({ python: pythonPath(), scriptsDir: fixtureScripts, cwd: projectRoot, killGraceMs: 1000 });
const old = new Date(Date.now() - 60_000);

async function planIn(dir: string, runId = 'pins'): Promise<RunPlan> {
  const plan = await fixturePlan(dir, runId);
  await utimes(path.join(dir, 'prompts.jsonl'), old, old);
  await utimes(path.join(dir, 'model', 'config.json'), old, old);
  return plan;
}

async function runStage(req: StageRequest): Promise<unknown> {
  return new MockActivityEnvironment().run((r: StageRequest) => activities.runStage(r), req).then(() => undefined, (e: unknown) => e);
}

describe('pinned static inputs', () => {
  it('names every static input and local model folder once', async () => {
    const dir = await tmpDir();
    const plan = await planIn(dir);
    const paths = staticInputPaths(plan);
    expect(Object.keys(paths).sort()).toEqual(['evalData', 'guidance', 'models.judge', 'models.router', 'models.strong', 'models.weak', 'policy', 'prompts']);
    expect(paths['models.strong']).toBe(path.join(dir, 'model'));
    expect(paths.prompts).toBe(path.join(dir, 'prompts.jsonl'));
  });

  it('a changed input is reported, kept pinned, and re-pinned only when accepted (old pin kept)', async () => {
    const dir = await tmpDir();
    const plan = await planIn(dir);
    const first = await pinInputs(plan, undefined, { now: () => new Date('2026-01-01T00:00:00Z') });
    expect(first.changes).toEqual([]);
    expect((await pinInputs(plan, first.pins)).pins).toEqual(first.pins); // unchanged: same pins, same dates

    await appendFile(path.join(dir, 'prompts.jsonl'), '{"id": "p2", "messages": [{"role": "user", "content": "more"}]}\n');
    const seen = await pinInputs(plan, first.pins);
    expect(seen.changes.map((c) => c.name)).toEqual(['prompts']);
    expect(seen.pins.prompts).toEqual(first.pins.prompts);
    const accepted = await pinInputs(plan, first.pins, { accept: true, now: () => new Date('2026-02-01T00:00:00Z') });
    expect(accepted.pins.prompts?.sha256).toBe(seen.changes[0]!.sha256);
    expect(accepted.pins.prompts?.previous).toEqual([{ sha256: first.pins.prompts!.sha256, pinnedAt: '2026-01-01T00:00:00.000Z', replacedAt: '2026-02-01T00:00:00.000Z' }]);

    // A re-plan that points an input at another path pins the new path: a new input, not a change.
    const other = path.join(dir, 'other.jsonl');
    await writeFile(other, '{"id": "x", "messages": [{"role": "user", "content": "x"}]}\n');
    const replanned: RunPlan = { ...plan, staticInputs: { ...plan.staticInputs, prompts: { path: other } } };
    const moved = await pinInputs(replanned, first.pins);
    expect([moved.changes, moved.pins.prompts?.path]).toEqual([[], other]);
  });

  it('a stage attempt fails with BadInput when a pinned prompt file or model folder changed since the run started', async () => {
    const dir = await tmpDir();
    const plan = await planIn(dir);
    const pins = await pinRunInputs(plan, undefined);
    await updateRun(plan.runDir, (r) => void (r.inputs = pins));
    const sample: StageRequest = { runId: plan.runId, runDir: plan.runDir, iteration: 1, stage: 'sample', seed: 1, params: plan.stagePlans.sample.params, inputs: { prompts: plan.staticInputs.prompts! } };
    expect(await runStage(sample)).toBeUndefined(); // unchanged: runs

    await writeFile(path.join(dir, 'prompts.jsonl'), '{"id": "p1", "messages": [{"role": "user", "content": "edited"}]}\n');
    const e = await runStage({ ...sample, iteration: 2 });
    expect(e).toBeInstanceOf(ApplicationFailure);
    expect([(e as ApplicationFailure).type, (e as ApplicationFailure).nonRetryable]).toEqual(['BadInput', true]);
    expect((e as Error).message).toMatch(/^input prompts changed since the run started: .*prompts\.jsonl had sha256 [0-9a-f]{12}… when pinned/);

    // score's strong/weak models are in no spec hash: the pin is their only guard.
    await writeFile(path.join(dir, 'prompts.jsonl'), '{"id": "p1", "messages": [{"role": "user", "content": "hi"}]}\n'); // put back
    await writeFile(path.join(dir, 'model', 'config.json'), '{"tiny": false}\n');
    const samples = path.join(plan.runDir, 'iter-1', 'sample', 'samples.jsonl');
    const score: StageRequest = { ...sample, stage: 'score', params: plan.stagePlans.score.params, inputs: { samples: { path: samples } } };
    const m = await runStage(score);
    expect((m as ApplicationFailure).type).toBe('BadInput');
    expect((m as Error).message).toContain('input models.strong changed since the run started');
  });

  it('resume refuses a changed input (usage error, nothing started), re-pins with --accept-input-changes, and --verify ignores the hash cache', async () => {
    const dir = await tmpDir();
    const plan = await planIn(dir, `pins-${Date.now()}`);
    const runsDir = path.dirname(plan.runDir);
    const { client: c, close } = await client();
    try {
      const pins = await pinRunInputs(plan, undefined);
      await updateRun(plan.runDir, (r) => void (r.inputs = pins));
      await appendFile(path.join(dir, 'model', 'config.json'), ' ');
      const err = await resumeRun(c, runsDir, plan.runId).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toContain(`input models.strong changed since the run started`);
      expect((err as Error).message).toContain(`ratioloop resume ${plan.runId} --accept-input-changes`);
      await expect(c.workflow.getHandle(plan.runId).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);

      // The cache trusts a file's stat; --verify does not. A cache entry that lies (as after an edit that kept size,
      // mtime and ctime) hides a change from a plain resume, not from --verify.
      const cacheFile = path.join(plan.runDir, '.hash-cache.json');
      await resumeRun(c, runsDir, plan.runId, undefined, { pins: { accept: true } });
      await c.workflow.getHandle(plan.runId).terminate('test: no workers serve it');
      const rec = await readRun(plan.runDir);
      expect(rec.inputs?.['models.strong']?.previous).toHaveLength(1);
      const cache = JSON.parse(await readFile(cacheFile, 'utf8')) as { files: Record<string, { sha256: string }> };
      const lie = (rec.inputs as InputPins)['models.strong']!.sha256;
      for (const e of Object.values(cache.files)) e.sha256 = lie; // every file now "hashes" to some other value
      await writeFile(cacheFile, JSON.stringify(cache));
      const fooled = await resumeRun(c, runsDir, plan.runId).catch((e: unknown) => e);
      expect(fooled).toBeInstanceOf(UserError); // the lying cache makes inputs look changed: resume stops
      const verified = await resumeRun(c, runsDir, plan.runId, undefined, { pins: { verify: true } });
      expect(verified.runId).toBe(plan.runId); // the bytes match the pins: resumed
      await c.workflow.getHandle(plan.runId).terminate('test: no workers serve it');
      expect((JSON.parse(await readFile(cacheFile, 'utf8')) as { epoch?: string }).epoch).toMatch(/^[0-9a-f]{16}$/); // reset for the stages too
    } finally {
      await close();
    }
  });

  it('the CLI: resume --verify with a changed input exits 2 naming it, nothing started (accepting is resumeRun\'s test above)', async () => {
    const dir = await tmpDir();
    const plan = await planIn(dir, `pins-cli-${Date.now()}`);
    const pins = await pinRunInputs(plan, undefined);
    await updateRun(plan.runDir, (r) => void (r.inputs = pins));
    await writeFile(path.join(dir, 'prompts.jsonl'), '{"id": "p9", "messages": [{"role": "user", "content": "swapped"}]}\n');
    const env = { TEMPORAL_ADDRESS: inject('temporalAddress') };
    const cli = (...args: string[]) => execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), 'resume', plan.runId, '--runs-dir', path.dirname(plan.runDir), '--no-worker', '--no-preflight', ...args], { cwd: projectRoot, reject: false, env });
    const r = await cli('--verify');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('input prompts changed since the run started');
    const { client: c, close } = await client();
    try {
      await expect(c.workflow.getHandle(plan.runId).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError); // nothing started
    } finally {
      await close();
    }
  });
});
