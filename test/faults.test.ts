// The fault suite (issue #14 item 8): a reduced copy of the embedded default (configs/tiny.yaml, one iteration; fixture
// stage programs, the real ones on tiny models for the row about a real stage) run by real worker processes, one fault
// injected per run. Each row asserts what the table claims: the
// run ends as expected, no finished stage ran again, and every artifact equals an undisturbed run's with the same seed.
// The rows run concurrently (most of their time is waiting out heartbeat timeouts); the table is printed at the end
// (README, "Fault suite").
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, inject, it } from 'vitest';
import { execa } from 'execa';
import { freePort, startDevServer, type DevServer } from '../src/devServer';
import { projectRoot, pythonPath } from '../src/paths';
import { tmpDir } from './helpers';
import { cli, cliWith, killChildren, waitFor, worker } from './processes';
import {
  artifacts,
  differences,
  faultLog,
  finishedStages,
  fixtureEnv,
  realEnv,
  invocations,
  outcome,
  recomputed,
  table,
  tinyCopy,
  type Outcome,
  type Row,
  type Run,
  type Snapshot,
} from './faultSuite';

const ALL = 'control,cpu,gpu';
/** The table's rows, in its order. */
const F = {
  realBeforeRename: 'kill -9 of the worker in the last second before a manifest rename (real score stage)',
  afterRename: 'kill -9 of the worker right after the manifest rename',
  hashing: 'kill -9 of the worker during input hashing',
  server: 'Temporal server killed (-9) and restarted',
  bigLine: 'a stage prints a 3 MB line, then fails',
  hung: 'a hung stage (stall)',
  vanishing: 'an input path vanishes on one of two workers',
  cancel: 'a cancel with no worker alive (then resume)',
  oomKill: 'the stage process killed -9 (OOM killer)',
  frozen: 'a worker frozen past its heartbeat timeout (orphaned attempt)',
} as const;
const rows: Row[] = [];
let bundle: string;
let baseline: Promise<Record<string, string[]>>;
let realBaseline: Promise<Record<string, string[]>>;
let tinyModels: string;

afterAll(async () => {
  await killChildren();
  const order: string[] = Object.values(F);
  rows.sort((a, b) => order.indexOf(a.fault) - order.indexOf(b.fault));
  if (rows.length) process.stdout.write(`\nfault suite (test/faults.test.ts)\n${table(rows)}\n`);
});

/** A fault-suite run of the reduced embedded default, with its own folder and queues. */
async function newRun(runId: string, edit?: (raw: Record<string, unknown>) => void, address = inject('temporalAddress')): Promise<Run> {
  return tinyCopy(await tmpDir('ratioloop-faults-'), address, runId, (raw) => {
    raw.iterations = 1;
    edit?.(raw);
  });
}

/** The real stage programs on tiny random models (as test/e2e.test.ts): 2 prompts × 2 responses of 8 tokens; no evaluation. */
const realRun = (runId: string) =>
  newRun(runId, (raw) => {
    const models = raw.models as Record<string, { path: string }>;
    for (const [name, m] of Object.entries(models)) m.path = path.join(tinyModels, name === 'weak' ? 'weak' : 'strong');
    (raw.prompts as Record<string, unknown>).limit = 2;
    Object.assign(raw.sample as Record<string, unknown>, { n: 2, max_new_tokens: 8 });
    Object.assign(raw.train as Record<string, unknown>, { max_length: 128, max_prompt_length: 64 });
    (raw.evaluate as Record<string, unknown>).enabled = false;
  });

/** An undisturbed run's artifacts: the comparison for every row of its kind. */
async function undisturbed(run: Run, real: boolean): Promise<Record<string, string[]>> {
  const control = real ? (await startReal(run)).control : undefined;
  const w = real ? worker(run.address, 'cpu,gpu', run.config, realEnv(), ['--bundle', bundle]) : fixtureWorker(run);
  if (!real) await start(run);
  const got = await outcome(run);
  w.kill('SIGTERM');
  control?.kill('SIGTERM');
  if (got.outcome !== 'completed') throw new Error(`the undisturbed run ${run.runId} ${got.outcome}: ${got.error}`);
  const a = await artifacts(run.runDir);
  const stages = real ? 3 : 5;
  if (Object.keys(a).length !== stages) throw new Error(`the undisturbed run ${run.runId} left ${Object.keys(a).length} stages with manifests, not ${stages}`);
  return a;
}

/**
 * A real run: its control worker, the run started with train skipped (\`ratioloop skip-stage\`: the costliest stage,
 * which adds nothing to these faults), then the caller starts the stage workers.
 */
async function startReal(run: Run): Promise<{ control: ReturnType<typeof worker> }> {
  const control = worker(run.address, 'control', run.config, realEnv(), ['--bundle', bundle]);
  await start(run);
  const r = await cli(run.address, 'skip-stage', run.runId, '1', 'train', '--runs-dir', run.runsDir);
  if (r.exitCode !== 0) throw new Error(`ratioloop skip-stage exited ${r.exitCode}: ${r.stderr}`);
  return { control }; // wrapped: an async function returning the process itself would wait for it to exit
}

/** Start a run (no worker in the CLI: the worker processes serve it). */
async function start(run: Run): Promise<void> {
  const r = await cli(run.address, 'run', run.config, '--run-id', run.runId, '--detach', '--no-preflight');
  if (r.exitCode !== 0) throw new Error(`ratioloop run exited ${r.exitCode}: ${r.stderr}`);
}

const fixtureWorker = (run: Run, fixture: Record<string, unknown> = {}, fault?: string, queues = ALL) =>
  worker(run.address, queues, run.config, fixtureEnv(fixture, fault), ['--bundle', bundle]);

async function kill9(w: ReturnType<typeof worker>): Promise<void> {
  process.kill(w.pid!, 'SIGKILL');
  await w;
}

const reached = (run: Run, what: string) => waitFor(what, async () => (await faultLog(run)).includes(what), 120_000);
const started = (run: Run, stage: string) => waitFor(`${stage} to start`, async () => (await invocations(run)).includes(`1 ${stage} `), 120_000);

/** Measure what the fault left, record the row (shown in the table even when it fails) and return it. */
async function finish(fault: string, run: Run, snap: Snapshot, t0: number, expected: Outcome, opts: { note?: string; got?: { outcome: Outcome; error?: string }; real?: boolean } = {}): Promise<Row> {
  const got = opts.got ?? (await outcome(run));
  const again = await recomputed(run, snap);
  const diff = differences(await artifacts(run.runDir), await (opts.real ? realBaseline : baseline));
  const notes = [opts.note, again.length ? `recomputed: ${again.join(', ')}` : '', diff.length ? `differ: ${diff.join(', ')}` : '', got.error && got.outcome !== expected ? got.error.slice(0, 200) : ''];
  const row: Row = {
    fault,
    stages: opts.real ? 'real' : 'fixture',
    outcome: got.outcome,
    recomputed: again.length,
    identical: diff.length ? 'no' : 'yes',
    seconds: (Date.now() - t0) / 1000,
    note: notes.filter(Boolean).join('; '),
    green: got.outcome === expected && again.length === 0 && diff.length === 0,
  };
  rows.push(row);
  return row;
}

/** The worker process that ran a stage's last attempt. */
async function lastAttemptPid(run: Run, stage: string): Promise<number> {
  const logs = path.join(run.runDir, stage, 'logs');
  const n = Math.max(...(await readdir(logs)).map((f) => /^attempt-(\d+)\.worker\.json$/.exec(f)?.[1]).filter(Boolean).map(Number));
  return (JSON.parse(await readFile(path.join(logs, `attempt-${n}.worker.json`), 'utf8')) as { pid: number }).pid;
}

/** The failure types the stage's attempts recorded (logs/attempt-N.failure.json, written for counted failures). */
async function failureTypes(run: Run, stage: string): Promise<string[]> {
  const logs = path.join(run.runDir, stage, 'logs');
  const files = (await readdir(logs)).filter((f) => /^attempt-\d+\.failure\.json$/.test(f)).sort();
  return Promise.all(files.map(async (f) => (JSON.parse(await readFile(path.join(logs, f), 'utf8')) as { type: string }).type));
}

/** A process that exists and is not a zombie (a stopped parent cannot reap its dead child). */
async function alive(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return s !== '' && s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z';
}

describe.concurrent('fault suite', () => {
  beforeAll(async () => {
    const dir = await tmpDir('ratioloop-faults-');
    bundle = path.join(dir, 'workflow-bundle.js'); // built once: every worker and the cancelling CLI load it
    const b = await cli(inject('temporalAddress'), 'bundle', '--out', bundle);
    if (b.exitCode !== 0) throw new Error(`ratioloop bundle: ${b.stderr}`);
    // The undisturbed run every row is compared with (same config, same seed); rows start meanwhile.
    baseline = newRun('undisturbed').then((run) => undisturbed(run, false));
    tinyModels = path.join(dir, 'models');
    const tiny = (name: string, seed: number) => execa(pythonPath(), ['-m', 'ratioloop_py.tiny', '--out', path.join(tinyModels, name), '--seed', String(seed)], { cwd: path.join(projectRoot, 'scripts') });
    const models = Promise.all([tiny('strong', 1), tiny('weak', 2)]);
    realBaseline = models.then(() => realRun('undisturbed-real')).then((run) => undisturbed(run, true));
    realBaseline.catch(() => undefined);
    baseline.catch(() => undefined); // awaited by each row
  });

  it('kill -9 of the worker right after a stage renamed its manifest into place', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('after-rename');
    const w1 = fixtureWorker(run, {}, 'hold@after-manifest-rename:score:1');
    await start(run);
    await reached(run, 'reached after-manifest-rename score 1');
    const snap = await finishedStages(run);
    expect(snap.has('iter-1/score')).toBe(true); // done, and its worker never said so
    await kill9(w1);
    const w2 = fixtureWorker(run);
    const row = await finish(F.afterRename, run, snap, t0, 'completed', { note: 'the retry finds the manifest valid and skips the stage' });
    w2.kill('SIGTERM');
    expect(row).toMatchObject({ green: true });
  });

  it("kill -9 of the worker while it hashes a stage's inputs", async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('hashing');
    // evaluate's inputs: the trained policy, then the base policy (SmolLM2, 270 MB) and the eval data
    const w1 = fixtureWorker(run, {}, 'hold@hashing-inputs:evaluate:1');
    await start(run);
    await reached(run, 'reached hashing-inputs evaluate 1');
    const snap = await finishedStages(run);
    await kill9(w1);
    const w2 = fixtureWorker(run);
    const row = await finish(F.hashing, run, snap, t0, 'completed', { note: `evaluate's; ${snap.size} stages finished before` });
    w2.kill('SIGTERM');
    expect(row).toMatchObject({ green: true });
  });

  it('the Temporal server killed (-9) mid-stage and restarted on the same database', async ({ expect }) => {
    const t0 = Date.now();
    const sdir = await tmpDir('ratioloop-faults-server-');
    let port = await freePort();
    let server: DevServer = await startDevServer({ dir: sdir, port }).catch(async () => startDevServer({ dir: sdir, port: (port = await freePort()) }));
    const run = await newRun('server-restart', undefined, server.address);
    const w = fixtureWorker(run, { train: { sleep_s: 4 } });
    try {
      await start(run);
      await started(run, 'train');
      const snap = await finishedStages(run);
      process.kill(server.pid, 'SIGKILL');
      await server.exited;
      await new Promise((r) => setTimeout(r, 3_000));
      server = await startDevServer({ dir: sdir, port });
      const row = await finish(F.server, run, snap, t0, 'completed', { note: 'killed while train ran; down 3 s' });
      expect(row).toMatchObject({ green: true });
    } finally {
      w.kill('SIGTERM');
      await w;
      await server.stop();
    }
  });

  it('a stage that prints a 3 MB line (and fails once)', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('big-line');
    const w = fixtureWorker(run, { score: { big_line_attempts: 1 } });
    await start(run);
    await started(run, 'score');
    const row = await finish(F.bigLine, run, await finishedStages(run), t0, 'completed');
    w.kill('SIGTERM');
    // Nothing lost: the attempt log keeps the whole line (the failure carried a bounded tail).
    const log = path.join(run.runDir, 'iter-1/score/logs/attempt-1.stderr.log');
    const size = (await stat(log)).size;
    const types = await failureTypes(run, 'iter-1/score');
    row.note = `attempt 1: ${types.join(', ')}, its log keeps the line (${(size / 1e6).toFixed(1)} MB); retried`;
    expect(types).toEqual(['StageCrashed']);
    expect((await readFile(log, 'utf8')).split('\n').some((l) => l.length === 3_000_000)).toBe(true);
    expect(row).toMatchObject({ green: true });
  });

  it('an input path that one of two workers cannot see', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('vanishing-input');
    // w1 lacks the mount of the pairs folder (train's input); w2, a second gpu worker started after w1 failed, has it.
    const w1 = fixtureWorker(run, {}, `hide@${path.join(run.runDir, 'iter-1', 'pairs')}`);
    await start(run);
    await reached(run, 'hidden ');
    const snap = await finishedStages(run);
    const w2 = fixtureWorker(run, {}, undefined, 'gpu');
    const row = await finish(F.vanishing, run, snap, t0, 'completed');
    const hidden = (await faultLog(run)).split('\n').filter((l) => l.startsWith('hidden')).length;
    row.note = `WorkerEnvironment on the worker without it (${hidden}×), retried; train ran on the other`;
    w1.kill('SIGTERM');
    w2.kill('SIGTERM');
    expect(await lastAttemptPid(run, 'iter-1/train')).toBe(w2.pid);
    expect(row).toMatchObject({ green: true });
  });

  it('a cancel with no worker alive, then resume', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('cancel-no-worker');
    const w1 = fixtureWorker(run, { train: { sleep_s: 60 } });
    await start(run);
    await started(run, 'train');
    const snap = await finishedStages(run);
    await kill9(w1);
    // The CLI serves the control queue itself while nobody does (with the workers' prebuilt bundle).
    const c = await cliWith(run.address, { RATIOLOOP_WORKFLOW_BUNDLE: bundle }, 'cancel', run.runId, '--runs-dir', run.runsDir);
    const cancelled = await outcome(run);
    // Nothing lost: resume finishes the run.
    const w2 = fixtureWorker(run);
    const r = await cli(run.address, 'resume', run.runId, '--runs-dir', run.runsDir, '--detach', '--no-preflight');
    const resumed = r.exitCode === 0 ? await outcome(run) : { outcome: 'failed' as const, error: String(r.stderr) };
    const row = await finish(F.cancel, run, snap, t0, 'cancelled', { got: cancelled, note: `cancel exit ${c.exitCode}; resume: ${resumed.outcome}` });
    w2.kill('SIGTERM');
    if (resumed.outcome !== 'completed') row.green = false;
    expect(row).toMatchObject({ green: true });
  });

  it('a hung stage: silent past its stall timeout', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('stall', (raw) => {
      (raw.timeouts as Record<string, unknown>).train = { stallTimeout: '5s' };
    });
    const w = fixtureWorker(run, { train: { hang_attempts: 1 } });
    await start(run);
    await started(run, 'train');
    const row = await finish(F.hung, run, await finishedStages(run), t0, 'completed');
    w.kill('SIGTERM');
    const types = await failureTypes(run, 'iter-1/train');
    row.note = `attempt 1: ${types.join(', ')} after train.stallTimeout 5 s; retried`;
    expect(types).toEqual(['StageStalled']);
    expect(row).toMatchObject({ green: true });
  });

  it('a stage process killed by SIGKILL (as the kernel OOM killer does)', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('sigkill');
    const w = fixtureWorker(run, { score: { sigkill_attempts: 1 } });
    await start(run);
    await started(run, 'score');
    const row = await finish(F.oomKill, run, await finishedStages(run), t0, 'completed');
    w.kill('SIGTERM');
    const types = await failureTypes(run, 'iter-1/score');
    row.note = `attempt 1: ${types.join(', ')}; retried`;
    expect(types).toEqual(['ResourceExhausted']);
    expect(row).toMatchObject({ green: true });
  });

  it('a worker frozen (SIGSTOP) past its heartbeat timeout while its stage keeps writing', async ({ expect }) => {
    const t0 = Date.now();
    const run = await newRun('frozen-worker');
    const w1 = fixtureWorker(run, { train: { sleep_s: 20 } });
    await start(run);
    await started(run, 'train');
    const orphan = Number(/^1 train \d+ (\d+)$/m.exec(await invocations(run))![1]);
    const snap = await finishedStages(run);
    process.kill(w1.pid!, 'SIGSTOP'); // partitioned: no heartbeat, no lease renewal; its stage process runs on
    const w2 = fixtureWorker(run);
    try {
      await waitFor('the retry to take the stage over', async () => /^1 train [2-9] /m.test(await invocations(run)), 120_000);
      // The orphan stops writing once its lease is taken over (it checks every second or two).
      await waitFor('the orphaned stage process to stop', async () => !(await alive(orphan)), 15_000);
      const row = await finish(F.frozen, run, snap, t0, 'completed', { note: 'the orphan stopped when its lease was taken over' });
      expect(row).toMatchObject({ green: true });
    } finally {
      process.kill(w1.pid!, 'SIGCONT');
      w1.kill('SIGKILL');
      w2.kill('SIGTERM');
    }
  });
  it('kill -9 of the worker in the last second before the real score stage renames its manifest', async ({ expect }) => {
    await realBaseline.catch(() => undefined); // the tiny models exist once it ran (and two real runs at once would crowd 2 cores)
    const t0 = Date.now();
    const run = await realRun('real-before-rename');
    const { control } = await startReal(run);
    const w1 = worker(run.address, 'cpu,gpu', run.config, realEnv('hold@before-manifest-rename:score:1'), ['--bundle', bundle]);
    await reached(run, 'reached before-manifest-rename score 1');
    const snap = await finishedStages(run);
    await kill9(w1);
    const w2 = worker(run.address, 'cpu,gpu', run.config, realEnv(), ['--bundle', bundle]);
    const row = await finish(F.realBeforeRename, run, snap, t0, 'completed', { real: true, note: 'tiny random models, train skipped; the retry resumes from partial/' });
    w2.kill('SIGTERM');
    control.kill('SIGTERM');
    expect(row).toMatchObject({ green: true });
  });
});
