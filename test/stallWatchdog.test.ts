// The stall watchdog: a stage that prints no protocol line past its stall timeout loses its whole process group and
// fails retryably as StageStalled; alive lines from a long phase keep a quiet stage going.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { runPythonStage, StageStalledError, type StageEvent } from '../activities/pythonStage';
import { createStageActivities } from '../activities/stages';
import { toFailure } from '../activities/stageFailure';
import { durationMs } from '../src/config/resolve';
import { projectRoot, pythonPath } from '../src/paths';
import { readProgressFile, progressFileOf } from '../src/progressFile';
import type { StageRequest, StageResult } from '../workflows/types';
import { fixtureScripts, tmpDir } from './helpers';

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

async function script(dir: string, body: string): Promise<string> {
  const file = path.join(dir, 'stage.py');
  await writeFile(file, body);
  return file;
}

describe('stall watchdog', () => {
  it('kills the whole group of a stage that goes quiet (a child ignoring SIGTERM included) and fails as stalled', async () => {
    const dir = await tmpDir();
    const file = await script(dir, [
      'import json, os, signal, subprocess, sys, time',
      // A rank-like child in the same process group that ignores SIGTERM: only the SIGKILL after the grace period ends it.
      `child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])`,
      `open(${JSON.stringify(path.join(dir, 'pids'))}, "w").write(f"{os.getpid()} {child.pid}")`,
      'print(json.dumps({"type": "phase", "name": "all-reduce"}), flush=True)',
      'print(json.dumps({"type": "progress", "done": 3, "total": 10, "unit": "steps"}), flush=True)',
      'time.sleep(600)',
    ].join('\n'));
    const events: StageEvent[] = [];
    const logFile = path.join(dir, 'logs', 'attempt-1.stderr.log');
    const t0 = Date.now();
    const err = await runPythonStage({ python: pythonPath(), script: file, specPath: '/dev/null', cwd: projectRoot, stallTimeoutMs: 1_000, killGraceMs: 500, logFile, onEvent: (e) => events.push(e) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StageStalledError);
    const stall = (err as StageStalledError).stall;
    expect(stall.lastPhase).toBe('all-reduce');
    expect(stall.lastLine).toContain('"done": 3');
    expect(stall.quietMs).toBeGreaterThanOrEqual(1_000);
    expect(Date.now() - t0).toBeLessThan(8_000);
    const [leader, child] = (await readFile(path.join(dir, 'pids'), 'utf8')).split(' ').map(Number);
    expect(groupAlive(leader!)).toBe(false);
    expect(() => process.kill(child!, 0)).toThrow();
    expect(await readFile(logFile, 'utf8')).toContain('[ratioloop] stalled: no progress or alive line');
    // As the workflow sees it: retryable, its own type, the last phase and line in the message.
    const f = toFailure(err, { host: 'h1' });
    expect([f.type, f.nonRetryable]).toEqual(['StageStalled', false]);
    expect(f.message).toMatch(/^stalled: no progress or alive line for \d+ s \(stall timeout 1 s\); last phase: all-reduce; last line: .*"done": 3.*process group was killed \(on h1\)$/);
  });

  it('alive lines of a long phase (Stage.phase) keep a stage that prints no counts from being killed', async () => {
    const dir = await tmpDir();
    const file = await script(dir, [
      'import sys, time',
      `sys.path.insert(0, ${JSON.stringify(path.join(projectRoot, 'scripts'))})`,
      'from pathlib import Path',
      'from ratioloop_py.stage import Stage',
      `st = Stage(spec={"stage": "sample", "outputDir": ${JSON.stringify(dir)}}, spec_path=Path("/dev/null"))`,
      'with st.phase("loading the policy model"):',
      '    time.sleep(2.5)',
      'st.progress(1, 1, "responses")',
    ].join('\n'));
    const events: StageEvent[] = [];
    await runPythonStage({ python: pythonPath(), script: file, specPath: '/dev/null', cwd: projectRoot, stallTimeoutMs: 1_000, killGraceMs: 500, env: { RATIOLOOP_ALIVE_S: '0.2' }, onEvent: (e) => events.push(e) });
    expect(events[0]).toEqual({ type: 'phase', name: 'loading the policy model' });
    expect(events.filter((e) => e.type === 'alive').length).toBeGreaterThanOrEqual(8);
    expect(events.at(-1)).toEqual({ type: 'progress', done: 1, total: 1, unit: 'responses' });
  });

  it('the stage activity: a fixture hung in its loading phase fails the attempt as StageStalled, its progress.json names the phase', async () => {
    const activities = createStageActivities({ python: pythonPath(), scriptsDir: fixtureScripts, cwd: projectRoot, killGraceMs: 500 });
    const runDir = await tmpDir();
    const prompts = path.join(runDir, 'inputs', 'prompts.jsonl');
    await mkdir(path.dirname(prompts), { recursive: true });
    await writeFile(prompts, '{"prompt": "p"}\n');
    const req: StageRequest = {
      runId: 'r', runDir, iteration: 1, stage: 'sample', seed: 1, inputs: { prompts: { path: prompts } },
      params: { fixture: { sample: { hang_in_phase_attempts: 1, alive_for_s: 0.5 } } }, stallTimeoutMs: 1_500,
    };
    const env = new MockActivityEnvironment({ attempt: 1 });
    const err = await env.run((r: StageRequest) => activities.runStage(r), req).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    const f = err as ApplicationFailure;
    expect([f.type, f.nonRetryable]).toEqual(['StageStalled', false]);
    expect(f.message).toContain('last phase: loading the fixture model');
    const beat = await readProgressFile(progressFileOf(runDir, 1, 'sample'));
    expect([beat?.phase, beat?.step, beat?.attempt]).toEqual(['running', 'loading the fixture model', 1]);
    // The next attempt does not hang: the same request completes.
    const again = await new MockActivityEnvironment({ attempt: 2 }).run<[StageRequest], StageResult, (r: StageRequest) => Promise<StageResult>>((r) => activities.runStage(r), req);
    expect(again.skipped).toBe(false);
  });

  it('durations for stallTimeout', () => {
    expect([durationMs('90s'), durationMs('30m'), durationMs('1.5h'), durationMs('250ms')]).toEqual([90_000, 1_800_000, 5_400_000, 250]);
  });
});
