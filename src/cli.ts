// The ratioloop command line. Exit codes: 0 ok, 1 run failed or unexpected error, 2 usage or config error,
// 3 run cancelled, 130 interrupted.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, WorkflowFailedError } from '@temporalio/client';
import { ConfigError, formatIssue, loadConfig, validateConfig } from './config/load';
import { configJsonSchema } from './config/jsonSchema';
import { preflight, PreflightError } from './config/preflight';
import type { RunConfig } from './config/schema';
import { cancelRun, controlRun, resumeRun, runStatus, startRun, UserError, type StartedRun } from './client/runs';
import { describeReplan, replanRun, type Replan } from './client/replan';
import { compareRuns, renderCompareTable } from './client/compare';
import { writeHtmlReport } from './client/report';
import { findRunningServer } from './devServer';
import { resolveTemporal, serverLogFile, stopSharedServer, superviseServer, type TemporalTarget } from './sharedServer';
import { log } from './log';
import { failureLines, ProgressView, statusLines } from './progressView';
import { listRuns, newRunId, readRun, runDirOf, RunIdError, validateRunId } from './runStore';
import { connectClient, prepareNamespace, settingsFromEnv } from './temporal';
import { QUEUE_ROLES, routeSdkLogs, startWorkers, type QueueRole, type WorkerSet } from './worker';
import { sdkFileLogger, sdkLogPath } from './sdkLog';
import { runRewardEval } from './client/rewardEval';
import { stateDir } from './paths';
import { writeWorkflowBundle } from './workflowBundle';
import { slotPoolFromFlags, SlotError } from './gpuSlots';
import { checkQueuePrefix, classSize, QueueNameError } from './queues';
import { runQueues } from './config/resolve';

const USAGE = `ratioloop — on-policy preference tuning with the guided density-ratio reward

Usage:
  ratioloop run CONFIG [--run-id ID] [--iterations K] [--detach] [--no-worker] [--no-preflight] [--cancel-on-interrupt]
  ratioloop resume RUN_ID [--config FILE] [--runs-dir DIR] [--iterations K] [--restart] [--verify] [--accept-input-changes] [--detach] [--no-worker] [--no-preflight] [--cancel-on-interrupt]
  ratioloop status RUN_ID [--runs-dir DIR] [--json]
  ratioloop list [--runs-dir DIR] [--json]
  ratioloop cancel RUN_ID [--runs-dir DIR] [--force]
  ratioloop pause|unpause|stop-after-iteration RUN_ID
  ratioloop set-iterations RUN_ID K
  ratioloop skip-stage RUN_ID ITER STAGE
  ratioloop compare RUN_ID... [--runs-dir DIR] [--json] [--html FILE]
  ratioloop worker [--queues control,cpu,gpu] [--config CONFIG] [--gpus 0,1,… | --gpu-slots N] [--queue-prefix P] [--bundle FILE]
  ratioloop bundle [--out FILE]
  ratioloop server [--port P] [--ui-port P] | ratioloop server stop
  ratioloop validate CONFIG [--no-preflight]
  ratioloop schema
  ratioloop reward-eval --config CONFIG --pairs FILE [--limit N] [--json]

Temporal: without TEMPORAL_ADDRESS an embedded dev server (SQLite under .ratioloop/) is used; set TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE and TEMPORAL_TLS_CERT/KEY/CA or TEMPORAL_API_KEY to use any Temporal cluster or Temporal Cloud.
The embedded server is shared: one per .ratioloop/ (server.lock), on a port chosen once (server-port.json), in its own
process group (Ctrl-C never reaches it), logging to .ratioloop/logs/server.log (size-capped). The first command that
needs it starts it; it stops a few seconds after its last user exits, or with \`ratioloop server stop\`.
\`ratioloop server\` keeps one in the foreground (with the UI); \`ratioloop worker\` uses the running one, never its own.

Ctrl-C in run/resume stops this command's workers and leaves the run open and resumable (the running stage is
cancelled and runs again from its checkpoint): \`ratioloop resume RUN_ID\` continues it. --cancel-on-interrupt cancels
the run instead. A second Ctrl-C exits at once. \`cancel\` waits until the cancellation is recorded (starting a
control worker here if none serves the run); --force terminates without bookkeeping. \`resume --restart\` terminates a
stuck open execution (e.g. one failing replay after an upgrade) and starts a new one: safe, because finished stages
are proven by their manifests and skipped.

\`resume RUN_ID --config FILE\` re-plans the run from an edited config (validated and pre-flighted like \`run\`; the
run is looked for in --runs-dir, else the config's runsDir): stages whose spec changed run again, unchanged finished
ones are skipped, and run.json records the change (old/new config hash, changed keys). The seed may not change (it
is part of the run's identity: start a new run instead). A run that is still open needs --restart to take a new
config. The run folder is \`<runsDir>/<RUN_ID>\` wherever that is now: a folder moved or mounted elsewhere resumes.

Pinned inputs: \`run\` hashes the static inputs (prompts, guidance, eval data, model folders) once and records them in
run.json; every stage attempt and every resume checks them, and a changed one fails clearly (exit 2 from resume).
\`resume --accept-input-changes\` records the new contents instead (stages that take them as inputs run again).
\`resume --verify\` re-hashes everything from the bytes (pinned inputs and every finished stage's outputs), ignoring
the run's hash cache, which otherwise proves an unchanged file by its stat.

Pre-flight: validate, run and resume check on this host that every path the config names exists (model folders with
config.json and, for template: chat, a chat template; prompts, guidance, eval data) and that each endpoint's api_key_env
is set. --no-preflight skips it (for clusters where this host cannot see the workers' paths).

Control (pause, unpause, set-iterations, stop-after-iteration, skip-stage) is checked when sent and applied at the
next stage boundary: the running stage is never interrupted. A stage may be skipped only if no later stage of its
iteration needs its outputs (skip evaluate, then train, ...).

Upgrades: \`ratioloop bundle\` builds the workflow code once (build id = its sha256); start control workers with
--bundle FILE (or RATIOLOOP_WORKFLOW_BUNDLE) so every machine runs the same code. Running runs pick up new workflow
code at their next iteration boundary (docs/architecture.md, Versioning).`;

const EXIT = { ok: 0, failed: 1, usage: 2, cancelled: 3, interrupted: 130 } as const;

class UsageError extends Error {}

const configErrorText = (e: ConfigError): string =>
  `${e.file}: ${e instanceof PreflightError ? 'pre-flight failed (--no-preflight skips it where this host cannot see the workers\' paths)' : 'invalid config'}\n${e.issues.map((i) => `  ${formatIssue(i)}`).join('\n')}\n`;

function need(positionals: string[], n: number, what: string): string[] {
  if (positionals.length < n) throw new UsageError(`missing ${what}\n\n${USAGE}`);
  return positionals;
}

async function withTemporal<T>(fn: (client: Client, target: TemporalTarget) => Promise<T>): Promise<T> {
  const target = (await resolveTemporal(await settingsFromEnv()))!;
  try {
    const connection = await connectClient(target.settings);
    try {
      // A server this process started was prepared at start; retention is changed only on the embedded server.
      target.searchAttributes = target.started ? true : await prepareNamespace(connection, target.settings.namespace, { retention: target.embedded, log });
      return await fn(new Client({ connection, namespace: target.settings.namespace }), target);
    } finally {
      await connection.close();
    }
  } finally {
    target.release?.();
  }
}

let sdkLog: string | undefined;
/** Before this process's first worker: the SDK's and workers' logs go to a file, whose path is printed once. */
function logSdkToFile(command: string): void {
  if (sdkLog) return;
  const file = sdkLogPath(command);
  const f = sdkFileLogger(file, { onError: (m) => process.stderr.write(`worker error: ${m.split('\n')[0]} (details in ${file})\n`) });
  if (!routeSdkLogs(f.logger)) return f.close();
  sdkLog = file;
  process.stderr.write(`worker and Temporal SDK logs: ${file}\n`);
}

/** Follow a run until it closes, drawing progress; returns the exit code. */
async function follow(client: Client, started: StartedRun, runsDir: string): Promise<number> {
  const view = new ProgressView();
  const handle = client.workflow.getHandle(started.runId);
  let closed = false;
  let terminated = false;
  // A run terminated from elsewhere (`cancel --force`) was stopped on purpose, like a cancelled one: exit 3, not 1.
  const result = handle.result().then(
    () => EXIT.ok,
    (e: unknown) => {
      terminated = e instanceof WorkflowFailedError && e.cause?.name === 'TerminatedFailure';
      return e instanceof WorkflowFailedError && (e.cause?.name === 'CancelledFailure' || terminated) ? EXIT.cancelled : EXIT.failed;
    },
  );
  void result.finally(() => (closed = true));
  while (!closed) {
    try {
      view.update(await runStatus(client, runsDir, started.runId));
    } catch (e) {
      log.debug({ err: (e as Error).message }, 'progress poll failed');
    }
    await Promise.race([result, new Promise((r) => setTimeout(r, 1000))]);
  }
  const final = await runStatus(client, runsDir, started.runId);
  view.update(final);
  const code = await result;
  if (code === EXIT.ok) {
    const cmp = await compareRuns(runsDir, [started.runId]);
    process.stdout.write('\n' + renderCompareTable(cmp) + '\n');
    const report = `${started.runDir}/report.html`;
    await writeHtmlReport(cmp, report, runsDir);
    process.stdout.write(`\nreport: ${report}\nrun folder: ${started.runDir}\n`);
  } else {
    const lines = code === EXIT.cancelled ? [`run ${started.runId} was ${terminated ? 'terminated (cancel --force)' : 'cancelled'}`] : await failureLines(final, started.runDir, sdkLog);
    process.stderr.write(`\n${lines.join('\n')}\n`);
    process.stderr.write(code === EXIT.cancelled ? `\`ratioloop resume ${started.runId}\` continues it (finished stages are kept)\n` : `fix the cause, then: ratioloop resume ${started.runId}\n`);
    // What did finish, and which stage failed with what, on one page; only a courtesy, so never a second error.
    try {
      const report = `${started.runDir}/report.html`;
      await writeHtmlReport(await compareRuns(runsDir, [started.runId]), report, runsDir);
      process.stderr.write(`report (the stages that finished): ${report}\n`);
    } catch (e) {
      log.debug({ err: (e as Error).message }, 'no report for the unfinished run');
    }
  }
  return code;
}

/** The schema's maximum for `iterations`, so --iterations cannot bypass it. */
function iterationMaximum(): number {
  const prop = (configJsonSchema() as { properties?: { iterations?: { maximum?: number } } }).properties?.iterations;
  return prop?.maximum ?? Number.MAX_SAFE_INTEGER;
}

interface RunFlags {
  detach?: boolean;
  'no-worker'?: boolean;
  iterations?: string;
  'runs-dir'?: string;
  'run-id'?: string;
  'no-preflight'?: boolean;
  restart?: boolean;
  'cancel-on-interrupt'?: boolean;
  config?: string;
  verify?: boolean;
  'accept-input-changes'?: boolean;
}

/** Pre-flight a config unless --no-preflight: a missing path is a usage error (exit 2) before anything starts. */
async function preflightOrThrow(config: RunConfig, configPath: string, skip: boolean | undefined): Promise<void> {
  if (skip) return;
  const issues = await preflight(config, { configPath });
  if (issues.length) throw new PreflightError(configPath, issues);
}

async function runOrResume(kind: 'run' | 'resume', positionals: string[], values: RunFlags): Promise<number> {
  const detach = Boolean(values.detach);
  const noWorker = Boolean(values['no-worker']) || detach;
  const iterations = values.iterations !== undefined ? Number(values.iterations) : undefined;
  const maxIterations = iterationMaximum();
  if (iterations !== undefined && (!Number.isInteger(iterations) || iterations < 1 || iterations > maxIterations)) {
    throw new UsageError(`--iterations must be an integer from 1 to ${maxIterations} (the config schema's maximum for iterations)`);
  }
  let config: RunConfig | undefined;
  let runsDir = values['runs-dir'] ?? 'runs';
  let runId: string;
  if (kind === 'run') {
    const [file] = need(positionals, 1, 'CONFIG') as [string];
    config = await loadConfig(file);
    await preflightOrThrow(config, file, values['no-preflight']);
    runsDir = config.runsDir;
    runId = validateRunId(values['run-id'] ?? newRunId(config.name));
  } else {
    runId = validateRunId(need(positionals, 1, 'RUN_ID')[0]!);
  }
  // resume --config: the edited config is checked like run's, and names where the run lives unless --runs-dir does.
  const edited = kind === 'resume' && values.config !== undefined ? await loadConfig(values.config) : undefined;
  if (edited && values.config) {
    await preflightOrThrow(edited, values.config, values['no-preflight']);
    runsDir = values['runs-dir'] ?? edited.runsDir;
  }
  const recorded = config ? undefined : await readRun(runDirOf(runsDir, runId)).catch(() => undefined);
  let replan: Replan | undefined;
  if (edited && values.config) {
    if (!recorded) throw new UserError(`no run ${runId} in ${path.resolve(runsDir)} (use --runs-dir if it lives elsewhere)`);
    // Before any server: an edit that cannot apply (a new seed) is refused with nothing changed.
    replan = replanRun(recorded, edited, { configPath: values.config, runDir: runDirOf(runsDir, runId), ...(iterations ? { iterations } : {}) });
  } else {
    // A resumed run re-checks its recorded config: a path removed since it started is a usage error, not a retried stage.
    // (A record whose config no longer passes today's schema is resumed from its plan, unchecked.)
    const recordedConfig = recorded?.configPath ? validateConfig(recorded.config).config : undefined;
    if (recorded?.configPath && recordedConfig) await preflightOrThrow(recordedConfig, recorded.configPath, values['no-preflight']);
  }
  // In-process workers serve the queues the run is planned with (the recorded plan's, or the re-plan's).
  const queues = config ? runQueues(config) : (replan?.plan.queues ?? recorded?.plan.queues);
  return withTemporal(async (client, target) => {
    if (detach && target.started) {
      throw new UserError('--detach needs a Temporal server and workers that outlive this command: start `ratioloop server` and `ratioloop worker` (or set TEMPORAL_ADDRESS), then run again');
    }
    let workers: WorkerSet | undefined;
    if (!noWorker) {
      logSdkToFile(kind);
      workers = await startWorkers({ settings: target.settings, roles: QUEUE_ROLES, ...(queues ? { queues } : {}) });
    }
    let interrupts = 0;
    const onSigint = (): void => {
      if (++interrupts > 1) {
        process.stderr.write(`\nsecond Ctrl-C: exiting now. Run ${runId} stays open in Temporal: \`ratioloop resume ${runId}\` continues it, \`ratioloop cancel ${runId}\` stops it\n`);
        process.exit(EXIT.interrupted);
      }
      if (values['cancel-on-interrupt']) {
        // Our workers keep serving until the workflow has recorded the cancellation; follow() then exits 3.
        process.stderr.write(`\ninterrupted: cancelling run ${runId} (--cancel-on-interrupt); waiting until it is recorded (Ctrl-C again to exit at once)\n`);
        void client.workflow.getHandle(runId).cancel().catch((e: unknown) => process.stderr.write(`could not cancel: ${(e as Error).message}\n`));
        return;
      }
      process.stderr.write(
        `\ninterrupted: stopping this command's workers; the running stage is cancelled and runs again from its checkpoint. ` +
          `Run ${runId} stays open and resumable: \`ratioloop resume ${runId}\` continues it, \`ratioloop cancel ${runId}\` stops it for good. (Ctrl-C again to exit at once)\n`,
      );
      void (async () => {
        await workers?.shutdown();
        target.release?.();
        process.exit(EXIT.interrupted);
      })();
    };
    process.on('SIGINT', onSigint); // on, not once: the second Ctrl-C must reach onSigint too
    const attrs = target.searchAttributes === undefined ? {} : { searchAttributes: target.searchAttributes };
    try {
      const started =
        kind === 'run' && config
          ? await startRun(client, config, { configPath: positionals[0]!, runId, ...(iterations ? { iterations } : {}), ...attrs })
          : await resumeRun(client, runsDir, runId, iterations, { ...attrs, ...(values.restart ? { restart: true } : {}), ...(replan ? { replan } : {}),
            pins: { ...(values.verify ? { verify: true } : {}), ...(values['accept-input-changes'] ? { accept: true } : {}) } });
      if (replan && !started.attached) process.stdout.write(describeReplan(replan) + '\n');
      process.stdout.write(`${kind === 'run' ? 'started' : started.attached ? 'attached to the running' : started.restarted ? 'terminated the open execution of and restarted' : 'resumed'} run ${started.runId} (${started.plan.iterations} iteration${started.plan.iterations > 1 ? 's' : ''}) → ${started.runDir}\n`);
      if (detach) return EXIT.ok;
      return await follow(client, started, runsDir);
    } finally {
      process.off('SIGINT', onSigint);
      await workers?.shutdown();
    }
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      'run-id': { type: 'string' },
      iterations: { type: 'string' },
      detach: { type: 'boolean' },
      'no-worker': { type: 'boolean' },
      'no-preflight': { type: 'boolean' },
      restart: { type: 'boolean' },
      verify: { type: 'boolean' },
      'accept-input-changes': { type: 'boolean' },
      'cancel-on-interrupt': { type: 'boolean' },
      force: { type: 'boolean' },
      shared: { type: 'boolean' },
      'runs-dir': { type: 'string' },
      json: { type: 'boolean' },
      html: { type: 'string' },
      queues: { type: 'string' },
      gpus: { type: 'string' },
      'gpu-slots': { type: 'string' },
      'queue-prefix': { type: 'string' },
      config: { type: 'string' },
      pairs: { type: 'string' },
      limit: { type: 'string' },
      port: { type: 'string' },
      'ui-port': { type: 'string' },
      bundle: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const runsDir = String(values['runs-dir'] ?? 'runs');
  if (!cmd || values.help || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return cmd ? EXIT.ok : EXIT.usage;
  }
  switch (cmd) {
    case 'validate': {
      const [file] = need(positionals, 1, 'CONFIG') as [string];
      try {
        await preflightOrThrow(await loadConfig(file), file, values['no-preflight']);
      } catch (e) {
        if (e instanceof ConfigError) {
          process.stderr.write(configErrorText(e));
          return EXIT.usage;
        }
        throw e;
      }
      process.stdout.write(`${file}: ok${values['no-preflight'] ? ' (schema only: pre-flight skipped)' : ''}\n`);
      return EXIT.ok;
    }
    case 'schema':
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + '\n');
      return EXIT.ok;
    case 'run':
    case 'resume':
      return runOrResume(cmd, positionals, values);
    case 'status': {
      const [id] = need(positionals, 1, 'RUN_ID') as [string];
      validateRunId(id);
      return withTemporal(async (client) => {
        const st = await runStatus(client, runsDir, id);
        process.stdout.write(values.json ? JSON.stringify(st, null, 2) + '\n' : statusLines(st).join('\n') + '\n');
        return EXIT.ok;
      });
    }
    case 'list': {
      const runs = await listRuns(runsDir);
      if (values.json) process.stdout.write(JSON.stringify(runs.map((r) => ({ runId: r.runId, status: r.status, createdAt: r.createdAt, iterations: r.plan.iterations, configPath: r.configPath })), null, 2) + '\n');
      else if (runs.length === 0) process.stdout.write(`no runs in ${runsDir}\n`);
      else for (const r of runs) process.stdout.write(`${r.runId.padEnd(40)} ${r.status.padEnd(10)} ${r.createdAt}  ${r.plan.iterations} iter  ${r.configPath ?? ''}\n`);
      return EXIT.ok;
    }
    case 'cancel': {
      const [id] = need(positionals, 1, 'RUN_ID') as [string];
      validateRunId(id);
      return withTemporal(async (client, target) => {
        const rec = await readRun(runDirOf(runsDir, id)).catch(() => undefined);
        const res = await cancelRun(client, runsDir, id, {
          force: Boolean(values.force),
          startControlWorker: async (queue) => {
            process.stderr.write(`no worker serves ${queue}: serving it here until the cancellation is recorded\n`);
            const ws = await startWorkers({ settings: target.settings, roles: ['control'], ...(rec ? { queues: rec.plan.queues } : {}) });
            return () => ws.shutdown();
          },
        });
        const what = { 'already-closed': `run ${id} is not running (${res.status}): nothing to cancel`, cancelled: `run ${id} cancelled (recorded in Temporal and run.json); \`ratioloop resume ${id}\` continues it later`, terminated: `run ${id} terminated (--force); \`ratioloop resume ${id}\` continues it later` }[res.outcome];
        process.stdout.write(what + '\n');
        return EXIT.ok;
      });
    }
    case 'pause':
    case 'unpause':
    case 'stop-after-iteration':
    case 'set-iterations':
    case 'skip-stage': {
      const want = { 'set-iterations': ['RUN_ID', 'K'], 'skip-stage': ['RUN_ID', 'ITER', 'STAGE'] }[cmd as string] ?? ['RUN_ID'];
      const [id, ...args] = need(positionals, want.length, want.join(' '));
      validateRunId(id!);
      return withTemporal(async (client) => {
        const ctl = await controlRun(client, runsDir, id!, cmd, args);
        const skip = ctl.skip.length ? `, skip ${ctl.skip.map((x) => x.replace(':', ' ')).join(', ')}` : '';
        process.stdout.write(`${cmd} accepted by run ${id!}: ${ctl.paused ? 'paused' : 'not paused'}, ${ctl.iterations} iteration${ctl.iterations > 1 ? 's' : ''}${skip} (applied at the next stage boundary)\n`);
        return EXIT.ok;
      });
    }
    case 'compare': {
      need(positionals, 1, 'RUN_ID');
      positionals.forEach(validateRunId);
      const cmp = await compareRuns(runsDir, positionals);
      if (values.html) await writeHtmlReport(cmp, String(values.html), runsDir);
      process.stdout.write(values.json ? JSON.stringify(cmp, null, 2) + '\n' : renderCompareTable(cmp) + '\n');
      if (values.html) process.stderr.write(`report written to ${String(values.html)}\n`);
      return EXIT.ok;
    }
    case 'worker': {
      const roles = String(values.queues ?? 'control,cpu,gpu').split(',').map((s) => s.trim()).filter(Boolean);
      const bad = roles.filter((r) => !(QUEUE_ROLES as readonly string[]).includes(r));
      if (bad.length) throw new UsageError(`--queues: unknown queue ${bad.join(', ')} (use control, cpu, gpu)`);
      const config = values.config ? await loadConfig(String(values.config)) : undefined;
      // Bad slot or prefix flags are usage errors before any server is looked for.
      const gpuSlots = slotPoolFromFlags({ ...(values.gpus !== undefined ? { gpus: String(values.gpus) } : {}), ...(values['gpu-slots'] !== undefined ? { gpuSlots: String(values['gpu-slots']) } : {}) });
      const queuePrefix = values['queue-prefix'] !== undefined ? checkQueuePrefix(String(values['queue-prefix']), '--queue-prefix') : undefined;
      // A worker never starts a private server nobody else would see: it uses the running one, or says how to start one.
      const target = await resolveTemporal(await settingsFromEnv(), { startIfNone: false });
      if (!target) throw new UserError(`no Temporal server is running for ${stateDir}: start one with \`ratioloop server\` (or start the run first, or set TEMPORAL_ADDRESS)`);
      logSdkToFile('worker');
      const ws = await startWorkers({
        settings: target.settings,
        roles: roles as QueueRole[],
        ...(config ? { queues: runQueues(config) } : {}),
        ...(queuePrefix ? { queuePrefix } : {}),
        ...(gpuSlots ? { gpuSlots } : {}),
        hostQueue: true,
        ...(values.bundle ? { bundleFile: String(values.bundle) } : {}),
      });
      for (const c of ws.unservable) process.stderr.write(`warning: this worker has ${gpuSlots?.size ?? 0} GPU slot(s) and does not poll ${c} (stages needing up to ${classSize(c)} GPUs on one machine): start one with more --gpus for them\n`);
      log.info({ address: target.settings.address, roles, queues: ws.polled, ...(ws.hostQueue ? { hostQueue: ws.hostQueue } : {}), ...(gpuSlots ? { gpus: gpuSlots.slots } : {}), ...(ws.buildId ? { buildId: ws.buildId } : {}) }, 'worker running (Ctrl-C to stop)');
      const stop = (): void => void ws.shutdown();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await ws.done;
      target.release?.();
      return EXIT.ok;
    }
    case 'server': {
      if (positionals[0] === 'stop') {
        const stopped = await stopSharedServer();
        process.stdout.write(stopped ? `stopped the Temporal server at ${stopped.address}\n` : `no Temporal server is running for ${stateDir}\n`);
        return EXIT.ok;
      }
      if (values.shared) {
        // The detached supervisor a command started (src/sharedServer.ts): serves until no user is left.
        await superviseServer({ log });
        return EXIT.ok;
      }
      const running = await findRunningServer();
      if (running) {
        process.stdout.write(`a Temporal server is already running at ${running.address} (log ${serverLogFile()}); \`ratioloop server stop\` stops it\n`);
        return EXIT.ok;
      }
      const out = await superviseServer({
        pinned: true,
        ui: true,
        log,
        ...(values.port ? { port: Number(values.port) } : {}),
        ...(values['ui-port'] ? { uiPort: Number(values['ui-port']) } : {}),
        onReady: (srv) => process.stdout.write(`Temporal dev server at ${srv.address} (database ${srv.dbFile}, log ${serverLogFile()})\nUI: ${srv.uiUrl}\nCtrl-C or \`ratioloop server stop\` stops it.\n`),
      });
      if (out === 'already') process.stdout.write('another ratioloop process started a server meanwhile; it serves this folder\n');
      return EXIT.ok;
    }
    case 'bundle': {
      const out = String(values.out ?? path.join(stateDir, 'workflow-bundle.js'));
      const b = await writeWorkflowBundle(out);
      process.stdout.write(`${out}\nbuild id ${b.buildId}\n`);
      return EXIT.ok;
    }
    case 'reward-eval': {
      if (!values.config || !values.pairs) throw new UsageError('reward-eval needs --config CONFIG and --pairs FILE');
      return runRewardEval({ configPath: String(values.config), pairs: String(values.pairs), json: Boolean(values.json), ...(values.limit ? { limit: Number(values.limit) } : {}) });
    }
    default:
      throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof ConfigError) {
      process.stderr.write(configErrorText(e));
      process.exit(EXIT.usage);
    }
    if (e instanceof UsageError || e instanceof RunIdError || e instanceof UserError || e instanceof SlotError || e instanceof QueueNameError || (e instanceof TypeError && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`error: ${(e).message}\n`);
      process.exit(EXIT.usage);
    }
    process.stderr.write(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(EXIT.failed);
  },
);
