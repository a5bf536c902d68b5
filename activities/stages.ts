// The stage activity: done/skip rule, spec.json, the Python stage through the runner, manifest verification.
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { StageActivities } from './types';
import type { InputRef, StageHeartbeat, StagePhase, StageRequest, StageResult } from '../workflows/types';
import { hashPath, manifestProblem, outputsByName, readManifest, specHash } from './manifests';
import type { HashOptions } from '../src/contentHash';
import { HashCache } from '../src/hashCache';
import { PythonStageError, runPythonStage, stagePython } from './pythonStage';
import { stageEnvironment } from './stageEnv';
import { inputNotVisible, toFailure } from './stageFailure';
import { pythonPath } from '../src/paths';
import { stageDirOf, writeJsonAtomic } from '../src/runStore';

export interface StageDeps {
  python: string;
  /** Folder holding <stage>.py programs (scripts/ in production; test fixtures in tests). */
  scriptsDir: string;
  cwd: string;
  killGraceMs?: number;
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
function hashCacheFor(runDir: string): Promise<HashCache> {
  const file = path.join(runDir, '.hash-cache.json');
  let c = caches.get(file);
  if (!c) caches.set(file, (c = new HashCache(file).load()));
  return c;
}

async function resolveInputs(inputs: Record<string, InputRef>, opts: HashOptions): Promise<Record<string, Required<InputRef>>> {
  const out: Record<string, Required<InputRef>> = {};
  for (const [name, ref] of Object.entries(inputs)) {
    const p = path.resolve(ref.path);
    try {
      await stat(p);
    } catch {
      throw inputNotVisible(name, p);
    }
    // Trust a hash an earlier manifest gave, but only after checking it still holds.
    const actual = await hashPath(p, opts);
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

export function createStageActivities(deps: StageDeps): StageActivities {
  return {
    async runStage(req: StageRequest): Promise<StageResult> {
      const ctx = Context.current();
      const started = Date.now();
      // Heartbeat from the first moment to the last, with the phase: hashing a 16 GB input or re-hashing outputs takes
      // longer than the heartbeat timeout, which runs from the attempt's start. The SDK throttles what reaches the server.
      let beat: StageHeartbeat = { stage: req.stage, iteration: req.iteration, done: 0, total: 0, unit: '', startedAtMs: started, updatedAtMs: started, phase: 'hashing inputs', phaseStartedAtMs: started };
      const phase = (p: StagePhase): void => {
        const now = Date.now();
        beat = { ...beat, phase: p, phaseStartedAtMs: now, done: 0, total: 0, unit: '', updatedAtMs: now };
        ctx.heartbeat(beat);
      };
      ctx.heartbeat(beat);
      const timer = setInterval(() => ctx.heartbeat(beat), 2_000);
      const cache = await hashCacheFor(req.runDir);
      const hashing: HashOptions = {
        cache,
        onProgress: (done, total) => {
          beat = { ...beat, done, total, unit: 'files', updatedAtMs: Date.now() };
        },
      };
      try {
        return await runAttempt();
      } finally {
        clearInterval(timer);
        await cache.save().catch(() => undefined); // only a cache: a failed save costs a re-hash later
      }

      async function runAttempt(): Promise<StageResult> {
        const outputDir = stageDirOf(req.runDir, req.iteration, req.stage);
        const inputs = await resolveInputs(req.inputs, hashing);
        const spec = { stage: req.stage, runId: req.runId, iteration: req.iteration, seed: req.seed, params: req.params, inputs, outputDir };
        const hash = specHash(spec);

        phase('checking manifest');
        const existing = await readManifest(outputDir);
        if (!(await manifestProblem(existing, hash, hashing)) && existing) {
          ctx.log.info(`${req.stage} (iteration ${req.iteration}) already done: manifest matches, skipping`);
          return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(existing), metrics: existing.metrics, skipped: true, durationMs: 0 };
        }
        await mkdir(outputDir, { recursive: true });
        await guardPartialState(outputDir, hash);
        const specPath = path.join(outputDir, 'spec.json');
        await writeJsonAtomic(specPath, { ...spec, specHash: hash });

        // Which worker ran which attempt: with worker pools on many machines, this is where to look for its logs.
        await writeJsonAtomic(path.join(outputDir, 'logs', `attempt-${ctx.info.attempt}.worker.json`), {
          hostname: os.hostname(),
          pid: process.pid,
          taskQueue: ctx.info.taskQueue,
          activityId: ctx.info.activityId,
          workflowRunId: ctx.info.workflowExecution?.runId,
          ...(req.workflowBuildId ? { workflowBuildId: req.workflowBuildId } : {}),
          startedAt: new Date(started).toISOString(),
        });
        // The timer above beats while the process lives, even when it prints nothing (model loading): a dead worker is
        // what the heartbeat timeout must catch.
        phase('running');
        const attemptLog = path.join(outputDir, 'logs', `attempt-${ctx.info.attempt}.stderr.log`);
        try {
          await runPythonStage({
            python: stagePython(req.stage, req.params, deps.python, pythonPath()), // .venv-vllm for vLLM stages
            script: path.join(deps.scriptsDir, SCRIPT[req.stage]),
            specPath,
            cwd: deps.cwd,
            signal: ctx.cancellationSignal,
            killGraceMs: deps.killGraceMs,
            logFile: attemptLog,
            environment: stageEnvironment(process.env, req.params),
            env: { RATIOLOOP_ATTEMPT: String(ctx.info.attempt) },
            onEvent: (ev) => {
              if (ev.type === 'progress') {
                beat = { ...beat, done: ev.done, total: ev.total, unit: ev.unit, updatedAtMs: Date.now() };
                ctx.heartbeat(beat);
              } else if (ev.type === 'log') ctx.log.info(`[${req.stage}] ${ev.msg}`);
            },
          });
        } catch (e) {
          if (e instanceof PythonStageError && e.cancelled) throw new CancelledFailure(`${req.stage} cancelled; its process group was killed`);
          throw toFailure(e, { host: os.hostname(), attemptLog });
        }

        phase('verifying');
        const manifest = await readManifest(outputDir);
        const problem = await manifestProblem(manifest, hash, hashing);
        if (problem || !manifest) {
          throw ApplicationFailure.create({ message: `${req.stage} exited 0 but its manifest is not valid: ${problem ?? 'missing'}`, type: 'ManifestMismatch' });
        }
        return { stage: req.stage, iteration: req.iteration, outputs: outputsByName(manifest), metrics: manifest.metrics, skipped: false, durationMs: Date.now() - started };
      }
    },
  };
}
