// The stage activity: done/skip rule, spec.json, the Python stage through the runner, manifest verification.
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { StageActivities } from './types';
import type { InputRef, StagePhase, StageRequest, StageResult } from '../workflows/types';
import { hashPath, manifestProblem, outputsByName, readManifest, specHash } from './manifests';
import type { HashOptions } from '../src/contentHash';
import { HASH_CACHE_FILE, HashCache } from '../src/hashCache';
import { checkPinnedInputs } from './pinnedInputs';
import { PythonStageError, runPythonStage, StageStalledError, stagePython } from './pythonStage';
import { StageProgress } from './stageProgress';
import { stageEnvironment } from './stageEnv';
import { inputNotVisible, toFailure } from './stageFailure';
import { afterFailure, manifestInvalid, throughputFor } from './stageRetry';
import { assertVisible, faultPoint } from './faultHooks';
import { pythonPath } from '../src/paths';
import { writeJsonAtomic } from '../src/runStore';
import { mergeEnv, specParams, stageOutputDir, wholeStageSpec } from './shardSpec';
import { adoptMovedManifest } from './relocate';
import { progressFileOf } from '../src/progressFile';
import type { GpuSlotPool, SlotLease } from '../src/gpuSlots';
import { slotEnv, takeStageSlots } from './stageSlots';
import { acquireLease, defaultTiming, keepRenewed, LeaseHeldError, LeaseLostError, newOwner, type LeaseTiming, type StageLease } from '../src/stageLease';
import { attemptTag, isFollower, waitForMainSpec } from './gangRank';
import { machineName } from '../src/queues';

export interface StageDeps {
  python: string;
  /** Folder holding <stage>.py programs (scripts/ in production; test fixtures in tests). */
  scriptsDir: string;
  cwd: string;
  killGraceMs?: number;
  /** Stage-folder lease (src/stageLease.ts): ttl and clock-skew margin, renewal period, how long to wait for a live holder. */
  lease?: Partial<LeaseTiming & { renewMs: number; waitMs: number; pollMs: number }>;
  /** GPU slots this worker's stages take (src/gpuSlots.ts); absent: none (the cpu queue). */
  slots?: GpuSlotPool;
  /** These activities serve the gpu queue's poll gate (src/gpuPollGate.ts), which counts one slot per task. */
  viaPermit?: boolean;
}

const SCRIPT: Record<StageRequest['stage'], string> = {
  sample: 'sample.py',
  score: 'score.py',
  pairs: 'pairs.py',
  train: 'train_simpo.py',
  evaluate: 'evaluate.py',
};

// One cache per run folder, shared by the stages this worker runs (kept in memory, saved after each hashing phase).
const caches = new Map<string, Promise<HashCache>>();
async function hashCacheFor(runDir: string): Promise<HashCache> {
  const file = path.join(runDir, HASH_CACHE_FILE);
  const known = caches.get(file);
  if (!known) {
    const c = new HashCache(file).load();
    caches.set(file, c);
    return c;
  }
  const c = await known;
  await c.refresh(); // other workers' entries, or a reset by `resume --verify` (then everything is hashed afresh)
  return c;
}

async function resolveInputs(inputs: Record<string, InputRef>, opts: HashOptions, where: StageRequest): Promise<Record<string, Required<InputRef>>> {
  const out: Record<string, Required<InputRef>> = {};
  for (const [name, ref] of Object.entries(inputs)) {
    const p = path.resolve(ref.path);
    try {
      await stat(p);
      await assertVisible(p, where); // fault suite only
    } catch {
      throw inputNotVisible(name, p);
    }
    // Trust a hash an earlier manifest gave, but only after checking it still holds.
    const actual = await hashPath(p, opts);
    if (Object.keys(out).length === 0) await faultPoint('hashing-inputs', where); // fault suite only
    if (ref.sha256 && ref.sha256 !== actual) {
      throw ApplicationFailure.nonRetryable(`input ${name}: ${p} changed since it was produced (sha256 mismatch)`, 'BadInput');
    }
    out[name] = { path: p, sha256: actual };
  }
  return out;
}

/** Partial state belongs to one spec: if the spec changed, set the old partial state aside (never delete it). */
async function guardPartialState(outputDir: string, hash: string): Promise<void> {
  const marker = path.join(outputDir, 'partial', '.spec-hash');
  let prev: string | undefined;
  try {
    prev = (await readFile(marker, 'utf8')).trim();
  } catch {
    prev = undefined;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  if (prev !== undefined && prev !== hash) await rename(path.join(outputDir, 'partial'), path.join(outputDir, `partial.stale-${stamp}`));
  const manifest = path.join(outputDir, 'manifest.json');
  try {
    await stat(manifest);
    await rename(manifest, path.join(outputDir, `manifest.stale-${stamp}.json`));
  } catch {
    // no stale manifest
  }
  await mkdir(path.dirname(marker), { recursive: true });
  await writeFile(marker, hash + '\n');
}

/** The record that superseded this attempt's lease, as an error; undefined while the lease is still ours. */
async function lostLease(lease: StageLease, outputDir: string): Promise<LeaseLostError | undefined> {
  const by = await lease.supersededBy().catch(() => undefined); // unreadable now: the renewer decides
  return by === undefined ? undefined : new LeaseLostError(by === 'gone' ? undefined : by, outputDir);
}
/** An orphaned attempt: someone else owns the folder now. Retryable (the new owner's attempt is the one that counts). */
const leaseLost = (e: LeaseLostError): ApplicationFailure => ApplicationFailure.retryable(`${e.message}: this attempt stopped writing`, 'StageLeaseLost');

export function createStageActivities(deps: StageDeps): StageActivities {
  const leaseTiming = (heartbeatTimeoutMs: number | undefined): { timing: LeaseTiming; renewMs: number } => {
    const timing: LeaseTiming = { ...defaultTiming(heartbeatTimeoutMs), ...(deps.lease?.ttlMs ? { ttlMs: deps.lease.ttlMs } : {}), ...(deps.lease?.skewMs !== undefined ? { skewMs: deps.lease.skewMs } : {}) };
    return { timing, renewMs: deps.lease?.renewMs ?? Math.max(100, Math.floor(timing.ttlMs / 3)) };
  };
  return {
    async runStage(req: StageRequest): Promise<StageResult> {
      const ctx = Context.current();
      const { timing, renewMs } = leaseTiming(ctx.info.heartbeatTimeoutMs);
      const started = Date.now();
      // A gang's rank runs once per gang attempt: the gang's attempt numbers its files, ranks > 0 add `.rank<r>`.
      const { attempt, suffix } = attemptTag(req, ctx.info.attempt);
      const follower = isFollower(req);
      // Heartbeat from the first moment to the last, with the phase: hashing a 16 GB input or re-hashing outputs takes
      // longer than the heartbeat timeout, which runs from the attempt's start. The SDK throttles what reaches the server;
      // the stage folder's progress.json gets every change within about a second (src/progressFile.ts).
      const progress = new StageProgress({
        stage: req.stage, iteration: req.iteration, attempt, startedAtMs: started, ...(req.shard ? { shard: req.shard } : {}),
        // Ranks > 0 share rank 0's folder: its progress.json is rank 0's.
        heartbeat: (b) => ctx.heartbeat(b), ...(follower ? {} : { file: progressFileOf(req.runDir, req.iteration, req.stage, req.shard) }),
      });
      const phase = (p: StagePhase): void => progress.phase(p);
      const timer = setInterval(() => ctx.heartbeat(progress.current), 2_000);
      const cache = await hashCacheFor(req.runDir);
      const hashing: HashOptions = {
        cache,
        onProgress: (done, total) => progress.count(done, total, 'files'),
      };
      // The stage folder's lease, once taken: renewed until the attempt ends, then released (after the process is gone).
      let owned: { lease: StageLease; stopRenewing: () => void; lost?: LeaseLostError } | undefined;
      let slots: SlotLease | undefined; // GPU slots, held while the stage's process lives
      const stop = new AbortController(); // the stage's process group dies on cancel, or when the lease is lost
      ctx.cancellationSignal.addEventListener('abort', () => stop.abort(), { once: true });
      try {
        return await runAttempt();
      } finally {
        clearInterval(timer);
        slots?.release();
        owned?.stopRenewing();
        await owned?.lease.release().catch(() => undefined); // unreleased, it goes stale after ttl + skew
        await progress.close();
        await cache.save().catch(() => undefined); // only a cache: a failed save costs a re-hash later
      }

      async function runAttempt(): Promise<StageResult> {
        const outputDir = stageOutputDir(req); // a shard's own folder inside the stage's
        const inputs = await resolveInputs(req.inputs, hashing, req);
        await checkPinnedInputs(req, inputs, hashing); // static inputs and model folders against run.json's pins
        const spec = { stage: req.stage, runId: req.runId, iteration: req.iteration, seed: req.seed, params: specParams(req), inputs, outputDir };
        const hash = specHash(spec);

        phase('checking manifest');
        const existing = await readManifest(outputDir);
        if (!(await manifestProblem(existing, hash, hashing)) && existing) {
          ctx.log.info(`${req.stage} (iteration ${req.iteration}) already done: manifest matches, skipping`);
          return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(existing), metrics: existing.metrics, skipped: true, durationMs: 0 };
        }
        const whole = wholeStageSpec(req, spec);
        const finished = whole ? await readManifest(whole.outputDir) : undefined;
        if (whole && finished && !(await manifestProblem(finished, specHash(whole), hashing))) {
          ctx.log.info(`${req.stage} (iteration ${req.iteration}) already done as a whole: shard ${req.shard?.index ?? ''} skipped`);
          return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(finished), metrics: finished.metrics, skipped: true, durationMs: 0 };
        }
        // A gang's done-check (workflows/gang.ts): not done, so the workflow claims its machines.
        if (req.gang?.probe) return { stage: req.stage, iteration: req.iteration, outputs: {}, metrics: {}, skipped: false, durationMs: 0 };
        await mkdir(outputDir, { recursive: true });
        let lease: StageLease | undefined; // ranks > 0 of a gang hold none: rank 0 owns the shared folder
        let specPath = path.join(outputDir, 'spec.json');
        if (follower) {
          specPath = await waitForMainSpec(outputDir, hash, { signal: stop.signal, timeoutMs: (deps.lease?.waitMs ?? timing.ttlMs + timing.skewMs + 30_000) + 60_000, onWait: () => phase('waiting for machine rank 0') });
        } else {
          // Own the folder before anything in it is touched (an orphaned attempt may still be writing here).
          const taken = await takeLease(outputDir);
          lease = taken.lease;
          const contested = taken.contested;
          // Someone else held the folder: it may have finished the stage meanwhile.
          const current = contested ? await readManifest(outputDir) : existing;
          if (contested && current && !(await manifestProblem(current, hash, hashing))) {
            return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(current), metrics: current.metrics, skipped: true, durationMs: 0 };
          }
          // Finished where the run folder used to be (moved or mounted elsewhere): done here too. It rewrites spec.json and
          // the manifest, so only as the folder's owner.
          const moved = current ? await adoptMovedManifest({ runDir: req.runDir, outputDir, spec, hash, hashing }) : undefined;
          if (moved) {
            ctx.log.info(`${req.stage} (iteration ${req.iteration}) already done where the run folder used to be: manifest rewritten for here, skipping`);
            return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(moved), metrics: moved.metrics, skipped: true, durationMs: 0 };
          }
          await guardPartialState(outputDir, hash);
        }
        // A batch halved after running out of memory: outside the spec hash, so partial work is kept (stageRetry.ts).
        const throughput = await throughputFor(outputDir, hash);
        if (!follower) await writeJsonAtomic(specPath, { ...spec, ...(throughput ? { throughput } : {}), specHash: hash });

        if (deps.slots) {
          slots = await takeStageSlots(req, { pool: deps.slots, viaPermit: deps.viaPermit ?? false, signal: stop.signal, onWait: () => phase('waiting for a GPU slot') });
        }
        // Which worker ran which attempt: with worker pools on many machines, this is where to look for its logs.
        await writeJsonAtomic(path.join(outputDir, 'logs', `attempt-${attempt}${suffix}.worker.json`), {
          hostname: os.hostname(),
          ...(req.gang ? { machine: machineName(), gang: { rank: req.gang.rank, machines: req.gang.machines, attempt: req.gang.attempt } } : {}),
          pid: process.pid,
          taskQueue: ctx.info.taskQueue,
          ...(deps.slots?.pinned ? { gpus: slots?.devices ?? [] } : {}),
          activityId: ctx.info.activityId,
          workflowRunId: ctx.info.workflowExecution?.runId,
          ...(req.workflowBuildId ? { workflowBuildId: req.workflowBuildId } : {}),
          startedAt: new Date(started).toISOString(),
        });
        // The timer above beats while the process lives, even when it prints nothing (model loading): a dead worker is
        // what the heartbeat timeout must catch.
        phase('running');
        const attemptLog = path.join(outputDir, 'logs', `attempt-${attempt}${suffix}.stderr.log`);
        try {
          await runPythonStage({
            python: stagePython(req.stage, req.params, deps.python, pythonPath()), // .venv-vllm for vLLM stages
            script: path.join(deps.scriptsDir, SCRIPT[req.stage]),
            specPath,
            cwd: deps.cwd,
            signal: stop.signal,
            killGraceMs: deps.killGraceMs,
            logFile: attemptLog,
            environment: stageEnvironment(process.env, req.params),
            env: { RATIOLOOP_ATTEMPT: String(attempt), ...lease?.env(Math.min(2_000, renewMs)), ...(await mergeEnv(req, outputDir)), ...slotEnv(deps.slots, slots), ...req.gang?.env },
            ...(req.stallTimeoutMs ? { stallTimeoutMs: req.stallTimeoutMs } : {}),
            onEvent: (ev) => {
              progress.event(ev);
              if (ev.type === 'log') ctx.log.info(`[${req.stage}] ${ev.msg}`);
            },
          });
        } catch (e) {
          // The stage process kills itself when it sees the takeover first (ratioloop_py/lease.py): still a lost lease.
          const lost = owned?.lost ?? (lease && (await lostLease(lease, outputDir)));
          if (lost) throw leaseLost(lost);
          if (e instanceof PythonStageError && e.cancelled) throw new CancelledFailure(`${req.stage} cancelled; its process group was killed`);
          if (e instanceof StageStalledError) ctx.log.warn(`[${req.stage}] ${e.message}`, { ...e.stall });
          throw await afterFailure(toFailure(e, { host: os.hostname(), attemptLog }), {
            stage: req.stage, outputDir, specHash: hash, params: spec.params, attempt,
            activity: `${ctx.info.workflowExecution?.runId ?? ''}/${ctx.info.activityId}`, maxFailures: req.maxFailures, throughput,
          });
        }

        slots?.release(); // the process is gone: the next stage may have its devices while this one verifies
        // Exit 0 after the lease was lost (before the renewer noticed) is an orphan's result: not this attempt's to verify.
        const lost = owned?.lost ?? (lease && (await lostLease(lease, outputDir)));
        if (lost) throw leaseLost(lost);
        // Ranks > 0 write no manifest: rank 0's proves the stage.
        if (follower) return { stage: req.stage, iteration: req.iteration, outputs: {}, metrics: {}, skipped: false, durationMs: Date.now() - started };
        phase('verifying');
        const manifest = await readManifest(outputDir);
        const problem = await manifestProblem(manifest, hash, hashing);
        if (problem || !manifest) {
          throw manifestInvalid(req.stage, problem ?? 'missing');
        }
        return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(manifest), metrics: manifest.metrics, skipped: false, durationMs: Date.now() - started };
      }

      async function takeLease(outputDir: string): Promise<{ lease: StageLease; contested: boolean }> {
        let waited = false;
        let lease: StageLease;
        try {
          lease = await acquireLease(outputDir, newOwner({ attempt, activityId: ctx.info.activityId, workflowRunId: ctx.info.workflowExecution?.runId }), {
            timing,
            waitMs: deps.lease?.waitMs ?? timing.ttlMs + timing.skewMs + 30_000,
            pollMs: deps.lease?.pollMs ?? 1_000,
            signal: stop.signal,
            onWait: (holder) => {
              waited = true;
              phase('waiting for lease');
              ctx.log.info(`${req.stage} (iteration ${req.iteration}): waiting for the stage folder's lease, held by ${holder.owner.host} pid ${holder.owner.pid}`);
            },
          });
        } catch (e) {
          if (stop.signal.aborted) throw new CancelledFailure(`${req.stage} cancelled while waiting for its stage folder's lease`);
          if (e instanceof LeaseHeldError) throw ApplicationFailure.retryable(`${req.stage} (iteration ${req.iteration}): ${e.message}`, 'StageLeaseHeld');
          throw e;
        }
        const o: NonNullable<typeof owned> = { lease, stopRenewing: () => undefined };
        o.stopRenewing = keepRenewed(lease, renewMs, (lost) => {
          o.lost = lost;
          ctx.log.warn(`${req.stage} (iteration ${req.iteration}): ${lost.message}; stopping the stage process`);
          stop.abort();
        });
        owned = o;
        if (waited) phase('checking manifest');
        return { lease, contested: waited || lease.tookOver !== undefined };
      }
    },
  };
}
