// Client-side run operations: start, resume, cancel, status (run store + live heartbeat details), list.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, WorkflowUpdateFailedError, defaultPayloadConverter } from '@temporalio/client';
import {
  pauseUpdate,
  RUN_ID_ATTR,
  setIterationsUpdate,
  skipStageUpdate,
  stopAfterIterationUpdate,
  unpauseUpdate,
} from '../../workflows/messages';
import { ALL_STAGES } from '../../workflows/plan';
import type { RunControl, RunPlan, StageHeartbeat, StageName } from '../../workflows/types';
import { projectRoot } from '../paths';
import { locatePlan, readRun, runDirOf, updateRun, writeJsonAtomic, type RunRecord } from '../runStore';
import { configHash, durationMs, resolvePlan } from '../config/resolve';
import { log } from '../log';
import { isUnregisteredAttributeError, warnNoAttributes } from '../temporal';
import type { RunConfig } from '../config/schema';
import { withProgressFiles } from './liveProgress';
import type { Replan } from './replan';
import { InputChangedError, pinRunInputs, type RunPinOptions } from '../inputPins';

export class UserError extends Error {}

async function versions(): Promise<Record<string, string>> {
  const pkg = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
  const v: Record<string, string> = { ratioloop: pkg.version, node: process.versions.node };
  try {
    const sdk = JSON.parse(await readFile(path.join(projectRoot, 'node_modules/@temporalio/client/package.json'), 'utf8')) as { version: string };
    v.temporalio = sdk.version;
    const head = (await readFile(path.join(projectRoot, '.git/HEAD'), 'utf8')).trim();
    const ref = head.startsWith('ref: ') ? (await readFile(path.join(projectRoot, '.git', head.slice(5)), 'utf8')).trim() : head;
    v.git = ref;
  } catch {
    // not a git checkout
  }
  return v;
}

export interface StartedRun {
  runId: string;
  runDir: string;
  plan: RunPlan;
  /** resume found the run still open and attached to it instead of starting it. */
  attached?: boolean;
  /** resume --restart terminated a still-open execution before starting this one. */
  restarted?: boolean;
}

/**
 * Start the workflow. searchAttributes: true/false when known (src/temporal.ts prepareNamespace), undefined when the
 * cluster would not say: then try with them and, if the start is rejected for an unregistered attribute, run without.
 */
async function startWorkflow(client: Client, plan: RunPlan, searchAttributes: boolean | undefined): Promise<void> {
  const start = (withAttributes: boolean) =>
    client.workflow.start('alignmentRun', {
      workflowId: plan.runId,
      taskQueue: plan.queues.control,
      args: withAttributes ? [plan] : [plan, { searchAttributes: false }],
      ...(withAttributes ? { typedSearchAttributes: [{ key: RUN_ID_ATTR, value: plan.runId }] } : {}),
    });
  try {
    try {
      await start(searchAttributes !== false);
    } catch (e) {
      if (searchAttributes !== undefined || !isUnregisteredAttributeError(e)) throw e;
      warnNoAttributes(log, client.options.namespace, [RUN_ID_ATTR.name]);
      await start(false);
    }
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) throw new UserError(`run ${plan.runId} is already running`);
    throw e;
  }
}

export interface StartOptions {
  /** Whether the namespace has ratioloop's search attributes (undefined: unknown). */
  searchAttributes?: boolean;
}

export async function startRun(client: Client, config: RunConfig, opts: { configPath: string; runId: string; iterations?: number } & StartOptions): Promise<StartedRun> {
  const plan = resolvePlan(config, opts);
  let exists = false;
  try {
    await readRun(plan.runDir);
    exists = true;
  } catch {
    exists = false;
  }
  if (exists) throw new UserError(`run ${opts.runId} already exists in ${path.dirname(plan.runDir)}: use \`ratioloop resume ${opts.runId}\` or pick another --run-id`);
  const now = new Date().toISOString();
  const record: RunRecord = {
    runId: plan.runId,
    createdAt: now,
    updatedAt: now,
    status: 'created',
    configPath: path.resolve(opts.configPath),
    configHash: configHash(config),
    config,
    plan,
    versions: await versions(),
    workflowRunIds: [],
    inputs: await pinOrThrow(plan, undefined, {}),
    stages: [],
  };
  await writeJsonAtomic(path.join(plan.runDir, 'run.json'), record);
  await startWorkflow(client, plan, opts.searchAttributes);
  return { runId: plan.runId, runDir: plan.runDir, plan };
}

export interface ResumeOptions extends StartOptions {
  /**
   * Terminate a still-open execution and start a new one: the way out of an execution that is stuck (a workflow task
   * failing replay after an upgrade, a worker that will never come back). Safe because finished stages are proven by
   * their manifests and skipped by the new execution; the running stage runs again from its checkpoint.
   */
  restart?: boolean;
  /** Re-plan from an edited config (src/client/replan.ts): recorded in run.json before the new execution starts. */
  replan?: Replan;
  /** Static inputs are re-checked against their pins (src/inputPins.ts): verify reads every byte, accept re-pins. */
  pins?: Omit<RunPinOptions, 'onSlow' | 'onUnseen'>;
}

/** Static inputs hashed and checked against run.json's pins: a changed one is a usage error before anything starts. */
async function pinOrThrow(plan: RunPlan, existing: RunRecord['inputs'], opts: Omit<RunPinOptions, 'onSlow' | 'onUnseen'>): Promise<NonNullable<RunRecord['inputs']>> {
  try {
    return await pinRunInputs(plan, existing, {
      ...opts,
      onSlow: (name, p) => process.stderr.write(`hashing ${name} (${p}) to pin it in run.json…\n`),
      onUnseen: (names) => process.stderr.write(`not pinned (not visible on this host): ${names.join(', ')}\n`),
    });
  } catch (e) {
    if (e instanceof InputChangedError) throw new UserError(e.message);
    throw e;
  }
}

/**
 * Start the run's workflow again from its recorded plan, or from opts.replan's: finished stages are skipped by their
 * manifests. The run folder is where run.json was found (`<runsDir>/<runId>`), not where it last ran. A run that is
 * still open (e.g. left behind by Ctrl-C with nobody serving it) is attached to instead: the caller's workers serve it;
 * with restart, it is terminated and started anew.
 */
export async function resumeRun(client: Client, runsDir: string, runId: string, iterations?: number, opts: ResumeOptions = {}): Promise<StartedRun> {
  const runDir = runDirOf(runsDir, runId);
  const rec = await readRun(runDir).catch(() => {
    throw new UserError(`no run ${runId} in ${path.resolve(runsDir)} (use --runs-dir if it lives elsewhere)`);
  });
  let restarted = false;
  try {
    const handle = client.workflow.getHandle(runId);
    const desc = await handle.describe();
    if (desc.status.name === 'RUNNING') {
      if (opts.restart) {
        await handle.terminate('ratioloop resume --restart: replaced by a new execution');
        restarted = true;
      } else {
        if (iterations) throw new UserError(`run ${runId} is running: change its iteration count with \`ratioloop set-iterations ${runId} ${iterations}\``);
        // The open execution keeps the plan it started with: an edited config cannot reach it.
        if (opts.replan) throw new UserError(`run ${runId} is running: a new config applies from a new execution. \`ratioloop resume ${runId} --config FILE --restart\` replaces it (finished stages are kept), or \`ratioloop cancel ${runId}\` first`);
        // Pins are checked and reset (verify) or re-pinned (accept) before a new execution starts, never under an open one.
        if (opts.pins?.verify || opts.pins?.accept) throw new UserError(`run ${runId} is running: --verify and --accept-input-changes apply to a new execution; add --restart (finished stages are kept)`);
        return { runId, runDir, plan: rec.plan, attached: true };
      }
    }
  } catch (e) {
    if (e instanceof UserError) throw e;
    if (!(e instanceof WorkflowNotFoundError)) throw e;
  }
  const plan: RunPlan = opts.replan?.plan ?? { ...locatePlan(rec.plan, runDir), ...(iterations ? { iterations } : {}) };
  const replan = opts.replan;
  const inputs = await pinOrThrow(plan, rec.inputs, opts.pins ?? {});
  await updateRun(runDir, (r) => {
    r.inputs = inputs;
    // Control requests belonged to the closed execution chain (a resumed run starts unpaused, with no skips).
    delete r.control;
    if (r.plan.runDir !== plan.runDir) r.relocations = [...(r.relocations ?? []), { from: r.plan.runDir, to: plan.runDir, at: new Date().toISOString() }];
    r.plan = plan;
    if (replan) {
      r.config = replan.config;
      r.configHash = replan.plan.configHash;
      r.configPath = replan.configPath;
      if (replan.change) r.replans = [...(r.replans ?? []), replan.change];
    }
  });
  await startWorkflow(client, plan, opts.searchAttributes);
  return { runId, runDir, plan, ...(restarted ? { restarted } : {}) };
}

export interface CancelOptions {
  /** Terminate at once (no bookkeeping by the workflow; run.json is marked here). */
  force?: boolean;
  /** Start a control worker for the given queue when nobody polls it; returns its shutdown. */
  startControlWorker?: (queue: string) => Promise<() => Promise<void>>;
  timeoutMs?: number;
}

export interface CancelOutcome {
  /** What happened: the run was already closed, was cancelled (recorded), or terminated. */
  outcome: 'already-closed' | 'cancelled' | 'terminated';
  status: string;
  /** A worker was started here because none served the run's control queue. */
  servedHere?: boolean;
}

/**
 * Cancel a run and wait until the cancellation is recorded (Temporal closes the run as cancelled and run.json says
 * cancelled). If no worker serves the run's control queue, the caller's startControlWorker serves it meanwhile (only
 * the control queue: no stage can start here). force terminates instead, for an execution that cannot make progress.
 */
export async function cancelRun(client: Client, runsDir: string, runId: string, opts: CancelOptions = {}): Promise<CancelOutcome> {
  const handle = client.workflow.getHandle(runId);
  let status: string;
  try {
    status = (await handle.describe()).status.name;
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw new UserError(`no run ${runId} on this Temporal server`);
    throw e;
  }
  if (status !== 'RUNNING') return { outcome: 'already-closed', status: status.toLowerCase() };
  const runDir = runDirOf(runsDir, runId);
  const rec = await readRun(runDir).catch(() => undefined);
  if (opts.force) {
    await handle.terminate('ratioloop cancel --force');
    // The workflow did no bookkeeping: say so in run.json (when the run's folder is here).
    if (rec) {
      await updateRun(runDir, (r) => {
        r.status = 'cancelled';
        r.error = 'terminated (ratioloop cancel --force)';
        for (const st of r.stages) if (st.status === 'running') st.status = 'cancelled';
      });
    }
    return { outcome: 'terminated', status: 'terminated' };
  }
  await handle.cancel();
  let stopWorker: (() => Promise<void>) | undefined;
  const queue = rec?.plan.queues.control;
  try {
    // Temporal lists a worker that stopped moments ago (Ctrl-C) as a poller for a while: if the cancellation is not
    // recorded soon although a poller is listed, serve the control queue here too (it only runs workflow tasks).
    const serve = async (): Promise<void> => {
      if (queue && opts.startControlWorker && !stopWorker) stopWorker = await opts.startControlWorker(queue);
    };
    if ((await pollerCount(client, queue ?? '', 1)) === 0) await serve();
    // A stage whose worker is dead ends only at its heartbeat timeout (then the run is recorded cancelled): wait that long.
    const heartbeatMs = Math.max(0, ...Object.values(rec?.plan.stagePlans ?? {}).map((p) => {
      try {
        return durationMs(p.options.heartbeatTimeout);
      } catch {
        return 0;
      }
    }));
    const timeoutMs = opts.timeoutMs ?? Math.max(120_000, heartbeatMs + 30_000);
    const start = Date.now();
    const until = start + timeoutMs;
    for (;;) {
      if (Date.now() - start > 5_000) await serve();
      const st = (await handle.describe()).status.name;
      const recorded = !rec || (await readRun(runDir).then((r) => r.status !== 'running' && r.status !== 'created', () => true));
      if (st !== 'RUNNING' && recorded) return { outcome: st === 'CANCELLED' ? 'cancelled' : 'already-closed', status: st.toLowerCase(), ...(stopWorker ? { servedHere: true } : {}) };
      if (Date.now() > until) {
        throw new UserError(
          `cancellation of ${runId} was requested but not recorded within ${Math.round(timeoutMs / 1000)} s` +
            (queue && !stopWorker ? ` (is the worker serving ${queue} stuck?)` : '') +
            `: \`ratioloop cancel ${runId} --force\` terminates it`,
        );
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await stopWorker?.();
  }
}

async function pollerCount(client: Client, queue: string, type: 1 | 2): Promise<number | undefined> {
  try {
    const r = await client.workflowService.describeTaskQueue({ namespace: client.options.namespace, taskQueue: { name: queue }, taskQueueType: type });
    return (r.pollers ?? []).length;
  } catch {
    return undefined; // not allowed here: assume someone serves it
  }
}

export const CONTROL_VERBS = ['pause', 'unpause', 'set-iterations', 'stop-after-iteration', 'skip-stage'] as const;
export type ControlVerb = (typeof CONTROL_VERBS)[number];

/**
 * Send a control request to a running run and wait until the workflow accepts (or its validator rejects) it; it takes
 * effect at the next stage boundary. Gives up after timeoutMs when no control worker answers.
 */
export async function controlRun(client: Client, runsDir: string, runId: string, verb: ControlVerb, args: string[], timeoutMs = 30_000): Promise<RunControl> {
  const rec = await readRun(runDirOf(runsDir, runId)).catch(() => undefined);
  const handle = client.workflow.getHandle(runId);
  try {
    const desc = await handle.describe();
    if (desc.status.name !== 'RUNNING') throw new UserError(`run ${runId} is not running (${desc.status.name.toLowerCase()}); control requests need a running run`);
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw new UserError(`no run ${runId} on this Temporal server`);
    throw e;
  }
  const int = (v: string | undefined, what: string): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n)) throw new UserError(`${verb}: ${what} must be an integer`);
    return n;
  };
  let sent: Promise<RunControl>;
  switch (verb) {
    case 'pause':
      sent = handle.executeUpdate(pauseUpdate);
      break;
    case 'unpause':
      sent = handle.executeUpdate(unpauseUpdate);
      break;
    case 'stop-after-iteration':
      sent = handle.executeUpdate(stopAfterIterationUpdate);
      break;
    case 'set-iterations':
      sent = handle.executeUpdate(setIterationsUpdate, { args: [int(args[0], 'K')] });
      break;
    case 'skip-stage': {
      const iteration = int(args[0], 'ITER');
      const stage = args[1] as StageName;
      if (!ALL_STAGES.includes(stage)) throw new UserError(`skip-stage: STAGE must be one of ${ALL_STAGES.join(', ')}`);
      sent = handle.executeUpdate(skipStageUpdate, { args: [{ iteration, stage }] });
      break;
    }
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const queue = rec?.plan.queues.control ?? 'its control queue';
      reject(new UserError(`no answer from run ${runId} within ${Math.round(timeoutMs / 1000)} s: no worker seems to serve ${queue}. Start one (\`ratioloop worker --queues control\` or \`ratioloop resume ${runId}\`) and send the request again`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([sent, timeout]);
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) throw new UserError(`${verb} refused: ${e.cause?.message ?? e.message}`);
    throw e;
  } finally {
    clearTimeout(timer);
    sent.catch(() => undefined);
  }
}

export interface RunStatus {
  record: RunRecord;
  temporal?: { status: string; runId: string; startTime: string; closeTime?: string };
  live: StageHeartbeat[];
  /** Queues the run is waiting on that no worker polls ("why nothing moves"). */
  unserved?: string[];
  /** Temporal's view of each running stage: its attempt and the failure of the previous attempt. */
  attempts?: { iteration: number; stage: StageName; attempt: number; lastFailure?: string }[];
}

export async function runStatus(client: Client | undefined, runsDir: string, runId: string): Promise<RunStatus> {
  const runDir = runDirOf(runsDir, runId);
  const record = await readRun(runDir).catch(() => {
    throw new UserError(`no run ${runId} in ${path.resolve(runsDir)}`);
  });
  const out: RunStatus = { record, live: [] };
  if (!client) return withProgressFiles(out, runDir);
  try {
    const desc = await client.workflow.getHandle(runId).describe();
    out.temporal = {
      status: desc.status.name,
      runId: desc.runId,
      startTime: desc.startTime.toISOString(),
      ...(desc.closeTime ? { closeTime: desc.closeTime.toISOString() } : {}),
    };
    const runningStage = record.stages.find((s) => s.status === 'running');
    for (const pa of desc.raw.pendingActivities ?? []) {
      const p = pa.heartbeatDetails?.payloads?.[0];
      const beat = p ? defaultPayloadConverter.fromPayload<StageHeartbeat>(p) : undefined;
      if (beat) out.live.push(beat);
      // Bookkeeping activities have no heartbeat; a stage's first heartbeat may not have arrived yet.
      const where = beat ?? (pa.activityType?.name === 'runStage' ? runningStage : undefined);
      if (where && pa.attempt) {
        const lastFailure = pa.lastFailure?.message ?? undefined;
        out.attempts = [...(out.attempts ?? []), { iteration: where.iteration, stage: where.stage, attempt: pa.attempt, ...(lastFailure ? { lastFailure } : {}) }];
      }
    }
    if (desc.status.name === 'RUNNING') out.unserved = await unservedQueues(client, record.plan, record);
  } catch (e) {
    if (!(e instanceof WorkflowNotFoundError)) throw e;
  }
  return withProgressFiles(out, runDir);
}

/** The run's control queue (workflow tasks) and the running stage's queue (activity tasks), when nobody polls them. */
async function unservedQueues(client: Client, plan: RunPlan, rec: RunRecord): Promise<string[]> {
  const wanted: { name: string; type: 1 | 2 }[] = [{ name: plan.queues.control, type: 1 }]; // TASK_QUEUE_TYPE_WORKFLOW = 1, ACTIVITY = 2
  const runningStage = rec.stages.find((s) => s.status === 'running');
  // A resource-class stage (gpu-x8) waits on its class queue, which only workers with enough GPU slots poll.
  const stageQueue = runningStage ? plan.queues[runningStage.queue] : undefined;
  if (stageQueue) wanted.push({ name: stageQueue, type: 2 });
  const out: string[] = [];
  for (const q of wanted) {
    try {
      const r = await client.workflowService.describeTaskQueue({ namespace: client.options.namespace, taskQueue: { name: q.name }, taskQueueType: q.type });
      if ((r.pollers ?? []).length === 0) out.push(q.name);
    } catch {
      // not allowed or not supported here: say nothing rather than guess
    }
  }
  return out;
}
