// The stage activity alone (no server): heartbeat phases from first moment to last, the hash cache across attempts.
import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createStageActivities } from '../activities/stages';
import { PythonStageError } from '../activities/pythonStage';
import { toFailure } from '../activities/stageFailure';
import { liveText } from '../src/progressView';
import { projectRoot, pythonPath } from '../src/paths';
import type { StageHeartbeat, StageRequest, StageResult } from '../workflows/types';
import { fixtureScripts, tmpDir } from './helpers';

const activities = createStageActivities({ python: pythonPath(), scriptsDir: fixtureScripts, cwd: projectRoot, killGraceMs: 1000 });

async function runStage(req: StageRequest, attempt = 1): Promise<{ result?: StageResult; error?: unknown; beats: StageHeartbeat[] }> {
  const env = new MockActivityEnvironment({ attempt });
  const beats: StageHeartbeat[] = [];
  env.on('heartbeat', (d: unknown) => beats.push(d as StageHeartbeat));
  try {
    return { result: await env.run((r: StageRequest) => activities.runStage(r), req), beats };
  } catch (error) {
    return { error, beats };
  }
}

async function request(params: Record<string, unknown> = {}): Promise<StageRequest> {
  const runDir = await tmpDir();
  const prompts = path.join(runDir, 'inputs', 'prompts');
  await mkdir(prompts, { recursive: true });
  const old = new Date(Date.now() - 60_000);
  for (const name of ['a.jsonl', 'b.jsonl', 'c.jsonl']) {
    await writeFile(path.join(prompts, name), `{"prompt": "${name}"}\n`);
    await utimes(path.join(prompts, name), old, old);
  }
  return { runId: 'r', runDir, iteration: 1, stage: 'sample', seed: 1, params, inputs: { prompts: { path: prompts } } };
}

const phases = (beats: StageHeartbeat[]): string[] => beats.map((b) => b.phase ?? '?').filter((p, i, a) => i === 0 || a[i - 1] !== p);

describe('stage activity', () => {
  it('heartbeats a phase from the first moment (hashing inputs) to the last (verifying)', async () => {
    const { result, error, beats } = await runStage(await request());
    expect(error).toBeUndefined();
    expect(result?.skipped).toBe(false);
    expect(phases(beats)).toEqual(['hashing inputs', 'checking manifest', 'running', 'verifying']);
    expect(beats.find((b) => b.phase === 'running' && b.total > 0)?.unit).toBe('steps');
  });

  it('a second attempt proves the stage done from the manifest, input hashes coming from the per-file cache', async () => {
    const req = await request();
    expect((await runStage(req)).result?.skipped).toBe(false);
    const cache = JSON.parse(await readFile(path.join(req.runDir, '.hash-cache.json'), 'utf8')) as { files: Record<string, { sha256: string }> };
    expect(Object.keys(cache.files)).toHaveLength(3); // the three old input files; fresh outputs wait until they are 2 s old
    const again = await runStage(req, 2);
    expect(again.result?.skipped).toBe(true);
    expect(phases(again.beats)).toEqual(['hashing inputs', 'checking manifest']);
  });

  it('status shows the phase before the process reports progress, then the stage progress as before', () => {
    const now = 1_000_000;
    const h: StageHeartbeat = { stage: 'train', iteration: 1, done: 2, total: 8, unit: 'files', startedAtMs: now - 60_000, updatedAtMs: now, phase: 'hashing inputs', phaseStartedAtMs: now - 4_000 };
    expect(liveText(h, now)).toBe('hashing inputs: 2/8 files (25%) 0.50 files/s ETA 12s');
    expect(liveText({ ...h, phase: 'verifying', total: 0 }, now)).toBe('verifying… (4s)');
    expect(liveText({ ...h, phase: 'running', done: 0, total: 0 }, now)).toBe('starting… (4s)');
  });

  it('an input path this host cannot see is a retryable WorkerEnvironment failure naming the host, not BadInput', async () => {
    const req = await request();
    const { error } = await runStage({ ...req, inputs: { prompts: { path: path.join(req.runDir, 'not-mounted-here', 'prompts') } } });
    expect(error).toBeInstanceOf(ApplicationFailure);
    const f = error as ApplicationFailure;
    expect([f.type, f.nonRetryable]).toEqual(['WorkerEnvironment', false]);
    expect(f.message).toContain(`is not visible on host ${os.hostname()}`);
    // The Python side's exit 4 (package or path missing here) maps the same way; exit 2 stays BadInput.
    const py = toFailure(new PythonStageError('package vllm is not installed in /venv/bin/python (on host gpu-3)', 4, [], false), { host: 'gpu-3' });
    expect([py.type, py.nonRetryable, py.message]).toEqual(['WorkerEnvironment', false, 'package vllm is not installed in /venv/bin/python (on host gpu-3)']);
    expect(toFailure(new PythonStageError('prompts.jsonl:3: bad row', 2, [], false)).type).toBe('BadInput');
  });
});
