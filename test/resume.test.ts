// resume --config (re-plan from an edited config), a moved run folder, and the ways a run is stopped from the CLI
// (--cancel-on-interrupt, cancel --force, a second Ctrl-C), through the CLI with the real embedded server and fixture
// stages. One embedded server serves the whole file (a long linger keeps it between tests; stopped at the end).
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths';
import type { RunRecord } from '../src/runStore';
import { writeWorkflowBundle } from '../src/workflowBundle';
import { adoptMovedManifest } from '../activities/relocate';
import { hashPath, specHash } from '../activities/manifests';
import { writeJsonAtomic } from '../src/runStore';
import { changedKeys, replanRun } from '../src/client/replan';
import { validateConfig } from '../src/config/load';
import { configHash, resolvePlan } from '../src/config/resolve';
import { baseConfig, fixtureScripts, tmpDir, uniqueQueues } from './helpers';

const bin = path.join(projectRoot, 'bin/ratioloop.js');
const state = await tmpDir('ratioloop-resume-state-');
// One workflow bundle for every CLI process here (each would otherwise build its own: seconds of CPU apiece).
const bundle = path.join(state, 'workflow-bundle.js');
await writeWorkflowBundle(bundle);
const children: ResultPromise[] = [];

function cli(fixture: object, ...args: string[]): ResultPromise {
  const env = {
    ...process.env,
    TEMPORAL_ADDRESS: '',
    CI: '1',
    RATIOLOOP_STATE_DIR: state,
    RATIOLOOP_SCRIPTS_DIR: fixtureScripts,
    RATIOLOOP_FIXTURE: JSON.stringify(fixture),
    RATIOLOOP_SERVER_LINGER_MS: '30000',
    RATIOLOOP_WORKFLOW_BUNDLE: bundle,
  };
  const c = execa('node', [bin, ...args], { cwd: projectRoot, env, reject: false });
  children.push(c);
  return c;
}

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await Promise.allSettled(children);
  await execa('node', [bin, 'server', 'stop'], { cwd: projectRoot, env: { ...process.env, TEMPORAL_ADDRESS: '', RATIOLOOP_STATE_DIR: state }, reject: false });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(200)) if (await pred()) return;
  throw new Error(`timed out waiting for ${what}`);
}
const text = (f: string) => readFile(f, 'utf8').catch(() => '');
const record = async (runDir: string) => JSON.parse(await text(path.join(runDir, 'run.json'))) as RunRecord;
/** Stage names of the invocations.log lines the fixture stages append (one per process that really ran). */
const ran = async (runDir: string) => (await text(path.join(runDir, 'invocations.log'))).trim().split('\n').filter(Boolean).map((l) => l.split(' ')[1]);
const stageStatus = (rec: RunRecord) => Object.fromEntries(rec.stages.map((s) => [s.stage, s.status]));

/** A one-iteration fixture config (sample, score, pairs, train) in its own folder; `edit` changes it before writing. */
async function setup(name: string): Promise<{ dir: string; config: string; runsDir: string; cfg: Record<string, unknown> }> {
  const dir = await tmpDir(`ratioloop-resume-${name}-`);
  const cfg = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false }, taskQueues: uniqueQueues() };
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, JSON.stringify(cfg)); // JSON is YAML
  return { dir, config, runsDir: path.join(dir, 'runs'), cfg };
}

/** The train stage fails at once as bad input (as an out-of-memory batch size would be fixed: by editing the config). */
const trainFails = { train: { bad_input: 'fixture: batch too large for this GPU' } };

describe('resume', () => {
  it('--config re-plans: an edited train batch size runs train again and skips the finished stages; a new seed is refused', async () => {
    const { dir, config, runsDir, cfg } = await setup('replan');
    const runDir = path.join(runsDir, 'rs-replan');
    const first = await cli(trainFails, 'run', config, '--run-id', 'rs-replan', '--no-preflight');
    expect(first.exitCode, String(first.stderr)).toBe(1);
    expect(first.stdout, String(first.stderr)).toContain('started run rs-replan');
    expect(first.stderr).toContain(`report (the stages that finished): ${runDir}/report.html`);
    expect(await text(path.join(runDir, 'report.html'))).toContain('batch too large for this GPU; this report shows what its folder holds');
    const failed = await record(runDir);
    expect(stageStatus(failed)).toMatchObject({ sample: 'done', score: 'done', pairs: 'done', train: 'failed' });

    const seeded = path.join(dir, 'seed.yaml');
    await writeFile(seeded, JSON.stringify({ ...cfg, seed: 8 }));
    const refused = await cli({}, 'resume', 'rs-replan', '--config', seeded, '--no-preflight');
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain("seed 8 differs from run rs-replan's seed 7");
    expect((await record(runDir)).configHash).toBe(failed.configHash); // nothing recorded

    const edited = path.join(dir, 'edited.yaml');
    await writeFile(edited, JSON.stringify({ ...cfg, train: { per_device_train_batch_size: 1 } }));
    // pre-flighted like run: the fixture's model folders have no chat template, so without --no-preflight it is exit 2
    const unchecked = await cli({}, 'resume', 'rs-replan', '--config', edited);
    expect(unchecked.exitCode).toBe(2);
    expect(unchecked.stderr).toContain(`${edited}: pre-flight failed`);
    expect((await record(runDir)).configHash).toBe(failed.configHash);
    const res = await cli({}, 'resume', 'rs-replan', '--config', edited, '--no-preflight');
    expect(res.exitCode, String(res.stderr)).toBe(0);
    expect(res.stdout).toContain('changed train.per_device_train_batch_size; stage specs changed: train.');
    const rec = await record(runDir);
    expect(rec.status).toBe('completed');
    expect(stageStatus(rec)).toEqual({ sample: 'skipped', score: 'skipped', pairs: 'skipped', train: 'done' });
    expect(await ran(runDir)).toEqual(['sample', 'score', 'pairs', 'train', 'train']);
    expect(rec.replans).toEqual([expect.objectContaining({ configPath: edited, fromConfigHash: failed.configHash, toConfigHash: rec.configHash, changedKeys: ['train.per_device_train_batch_size'], changedStages: ['train'] })]);
    expect(rec.configHash).not.toBe(failed.configHash);
    expect((rec.config as { train: { per_device_train_batch_size: number } }).train.per_device_train_batch_size).toBe(1);
    expect((rec.plan.stagePlans.train.params as { per_device_train_batch_size: number }).per_device_train_batch_size).toBe(1);
  }, 90_000);

  it('--config on an open run: refused (nothing recorded) unless --restart, which terminates it and runs the edited plan', async () => {
    const { dir, config, runsDir, cfg } = await setup('open');
    const runDir = path.join(runsDir, 'rs-open');
    const run = cli({ sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rs-open', '--no-preflight');
    await waitFor('the sample stage to start', async () => (await ran(runDir)).includes('sample'));
    const before = await record(runDir);
    const edited = path.join(dir, 'edited.yaml');
    await writeFile(edited, JSON.stringify({ ...cfg, train: { per_device_train_batch_size: 1 } }));
    const refused = await cli({}, 'resume', 'rs-open', '--config', edited, '--no-preflight');
    expect(refused.exitCode, String(refused.stderr)).toBe(2);
    expect(refused.stderr).toContain('run rs-open is running: a new config applies from a new execution');
    expect((await record(runDir)).configHash).toBe(before.configHash);
    const res = await cli({}, 'resume', 'rs-open', '--config', edited, '--no-preflight', '--restart');
    expect(res.exitCode, String(res.stderr)).toBe(0);
    expect(res.stdout).toContain('terminated the open execution of and restarted run rs-open');
    const r = await run; // the CLI that followed the first execution sees it end
    expect(r.exitCode).not.toBe(0);
    const rec = await record(runDir);
    expect(rec.status).toBe('completed');
    expect(rec.replans).toEqual([expect.objectContaining({ configPath: edited, fromConfigHash: before.configHash, changedKeys: ['train.per_device_train_batch_size'] })]);
    expect((rec.plan.stagePlans.train.params as { per_device_train_batch_size: number }).per_device_train_batch_size).toBe(1);
    expect(rec.workflowRunIds.length).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it('a run folder that was moved resumes where it now is, keeping its finished stages', async () => {
    const { dir, config, runsDir } = await setup('moved');
    const first = await cli(trainFails, 'run', config, '--run-id', 'rs-moved', '--no-preflight');
    expect(first.exitCode, String(first.stderr)).toBe(1);
    const oldDir = path.join(runsDir, 'rs-moved');
    const newRuns = path.join(dir, 'elsewhere', 'runs');
    await mkdir(newRuns, { recursive: true });
    await rename(oldDir, path.join(newRuns, 'rs-moved'));
    const res = await cli({}, 'resume', 'rs-moved', '--runs-dir', newRuns, '--no-preflight');
    expect(res.exitCode, String(res.stderr)).toBe(0);
    const newDir = path.join(newRuns, 'rs-moved');
    const rec = await record(newDir);
    expect(rec.status).toBe('completed');
    expect(rec.plan.runDir).toBe(newDir);
    expect(rec.relocations).toEqual([expect.objectContaining({ from: oldDir, to: newDir })]);
    expect(stageStatus(rec)).toEqual({ sample: 'skipped', score: 'skipped', pairs: 'skipped', train: 'done' });
    expect(await ran(newDir)).toEqual(['sample', 'score', 'pairs', 'train', 'train']);
    // the finished stages' manifests now name their outputs here, and say where they were made
    const sample = JSON.parse(await text(path.join(newDir, 'iter-1', 'sample', 'manifest.json'))) as { outputs: { path: string }[]; relocatedFrom?: string };
    expect(sample.relocatedFrom).toBe(oldDir);
    expect(sample.outputs.every((o) => o.path.startsWith(newDir + path.sep))).toBe(true);
    expect(await text(path.join(newDir, 'iter-1', 'train', 'manifest.json'))).toContain(newDir);
    expect(await text(path.join(oldDir, 'run.json'))).toBe(''); // nothing written where it used to be
  }, 90_000);

  it('run --cancel-on-interrupt: Ctrl-C cancels the run and exits 3 once the cancellation is recorded', async () => {
    const { config, runsDir } = await setup('coi');
    const runDir = path.join(runsDir, 'rs-coi');
    const run = cli({ sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rs-coi', '--no-preflight', '--cancel-on-interrupt');
    await waitFor('the sample stage to start', async () => (await ran(runDir)).includes('sample'));
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(r.stderr).toContain('cancelling run rs-coi (--cancel-on-interrupt)');
    const rec = await record(runDir);
    expect(rec.status).toBe('cancelled');
    expect(stageStatus(rec).sample).toBe('cancelled');
  }, 60_000);

  it('cancel --force terminates a run another CLI follows: both end, run.json says so', async () => {
    const { config, runsDir } = await setup('force');
    const runDir = path.join(runsDir, 'rs-force');
    const run = cli({ sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rs-force', '--no-preflight');
    await waitFor('the sample stage to start', async () => (await ran(runDir)).includes('sample'));
    const c = await cli({}, 'cancel', 'rs-force', '--force', '--runs-dir', runsDir);
    expect(c.exitCode, String(c.stderr)).toBe(0);
    expect(c.stdout).toContain('run rs-force terminated (--force)');
    const r = await run;
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(r.stderr).toContain('run rs-force was terminated');
    const rec = await record(runDir);
    expect(rec.status).toBe('cancelled');
    expect(rec.error).toContain('cancel --force');
  }, 60_000);

  it('a second Ctrl-C exits at once, while the first is still waiting for the cancellation', async () => {
    const { config, runsDir } = await setup('twice');
    const runDir = path.join(runsDir, 'rs-twice');
    const run = cli({ sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rs-twice', '--no-preflight', '--cancel-on-interrupt');
    await waitFor('the sample stage to start', async () => (await ran(runDir)).includes('sample'));
    let said = '';
    run.stderr?.on('data', (d: Buffer) => (said += d.toString()));
    run.kill('SIGINT');
    await waitFor('the first Ctrl-C to be handled', () => Promise.resolve(said.includes('cancelling run rs-twice')), 10_000);
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(r.stderr).toContain('second Ctrl-C: exiting now');
    expect(r.stderr).toContain('ratioloop cancel rs-twice');
  }, 60_000);
});

describe('adoptMovedManifest', () => {
  /** A finished stage made at <dir>/old/r1, then the folder moved to <dir>/new/r1; returns what a check there needs. */
  async function movedStage(params: Record<string, unknown>) {
    const dir = await tmpDir('ratioloop-relocate-');
    const [oldRun, newRun] = [path.join(dir, 'old', 'r1'), path.join(dir, 'new', 'r1')];
    const out = (run: string) => path.join(run, 'iter-1', 'score');
    await mkdir(out(oldRun), { recursive: true });
    await writeFile(path.join(oldRun, 'samples.jsonl'), '{"a": 1}\n');
    await writeFile(path.join(out(oldRun), 'scores.jsonl'), '{"s": 1}\n');
    const spec = (run: string, p = params) => ({ stage: 'score', runId: 'r1', iteration: 1, seed: 7, params: p, inputs: { samples: { path: path.join(run, 'samples.jsonl'), sha256: '' } }, outputDir: out(run) });
    const sha = await hashPath(path.join(oldRun, 'samples.jsonl'));
    const withSha = (sp: ReturnType<typeof spec>) => ({ ...sp, inputs: { samples: { ...sp.inputs.samples, sha256: sha } } });
    const old = withSha(spec(oldRun));
    await writeJsonAtomic(path.join(out(oldRun), 'spec.json'), { ...old, specHash: specHash(old) });
    const scores = path.join(out(oldRun), 'scores.jsonl');
    await writeJsonAtomic(path.join(out(oldRun), 'manifest.json'), { stage: 'score', specHash: specHash(old), inputs: old.inputs, outputs: [{ name: 'scores', path: scores, sha256: await hashPath(scores) }], metrics: {}, versions: {}, device: 'cpu', startedAt: '', finishedAt: '' });
    await mkdir(path.dirname(newRun), { recursive: true });
    await rename(oldRun, newRun);
    const check = (p = params) => {
      const now = withSha(spec(newRun, p));
      return adoptMovedManifest({ runDir: newRun, outputDir: out(newRun), spec: now, hash: specHash(now) });
    };
    return { oldRun, newRun, out, check };
  }

  it('adopts a stage finished at the old place, and nothing else', async () => {
    const a = await movedStage({ batch_size: 8 });
    expect(await a.check({ batch_size: 4 })).toBeUndefined(); // another spec: not proven
    const m = await a.check();
    expect(m?.outputs[0]?.path).toBe(path.join(a.out(a.newRun), 'scores.jsonl'));
    expect(m?.inputs.samples?.path).toBe(path.join(a.newRun, 'samples.jsonl'));
    expect((m as { relocatedFrom?: string }).relocatedFrom).toBe(a.oldRun);
    expect(await a.check()).toBeUndefined(); // rewritten for here: the plain check proves it from now on
    const b = await movedStage({});
    await writeFile(path.join(b.out(b.newRun), 'scores.jsonl'), 'changed\n');
    expect(await b.check()).toBeUndefined(); // an output changed after the move
  });
});

describe('replanRun', () => {
  async function recorded(raw: Record<string, unknown>, iterations?: number) {
    const dir = await tmpDir('ratioloop-replan-');
    const base = { ...(await baseConfig(dir)), evaluate: { enabled: false }, ...raw };
    const config = validateConfig(base).config!;
    const configPath = path.join(dir, 'config.yaml');
    const plan = resolvePlan(config, { configPath, runId: 'r1', ...(iterations ? { iterations } : {}) });
    const rec = { runId: 'r1', createdAt: '', updatedAt: '', status: 'failed', configHash: configHash(config), config, plan, versions: {}, workflowRunIds: [], stages: [] } as RunRecord;
    const edit = (more: Record<string, unknown>, opts: { iterations?: number; runDir?: string } = {}) =>
      replanRun(rec, validateConfig({ ...base, ...more }).config!, { configPath, runDir: opts.runDir ?? plan.runDir, ...(opts.iterations ? { iterations: opts.iterations } : {}) });
    return { rec, edit, base };
  }

  it('names the changed keys and stages, keeps the recorded iteration count unless the key changed, and refuses a new seed', async () => {
    const { rec, edit } = await recorded({}, 5); // started with run --iterations 5
    const score = edit({ score: { batch_size: 2 } });
    expect(score.change).toMatchObject({ changedKeys: ['score.batch_size'], changedStages: ['score'] });
    expect(score.plan.iterations).toBe(5);
    expect(edit({ iterations: 3 }).plan.iterations).toBe(3);
    expect(edit({}, { iterations: 4 }).plan.iterations).toBe(4);
    expect(edit({}).change).toBeUndefined();
    const withEval = edit({ evaluate: { enabled: true } });
    expect(withEval.change?.addedStages).toEqual(['evaluate']);
    expect(edit({}, { runDir: '/elsewhere/runs/r1' }).plan.runDir).toBe('/elsewhere/runs/r1');
    expect(() => edit({ seed: rec.plan.seed + 1 })).toThrow(/seed .* is part of a run's identity/);
    expect(changedKeys({ a: { b: 1, c: [1] } }, { a: { b: 1, c: [2] }, d: null })).toEqual(['a.c']);
  });
});
