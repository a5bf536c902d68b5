// The run store (DESIGN §4): <runsDir>/<runId>/run.json and iter-<k>/<stage>/ folders. The record of every run;
// Temporal is the engine. All writes are atomic (temp file + rename).
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { InputPins } from './inputPins';
import type { RunControl, RunPlan, RunState, StageName, StageStatus } from '../workflows/types';

export const RUN_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class RunIdError extends Error {}

export function validateRunId(id: string): string {
  if (!RUN_ID_RE.test(id) || id.includes('..')) {
    throw new RunIdError(`invalid run id ${JSON.stringify(id)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..' or '/'`);
  }
  return id;
}

export function newRunId(name = 'run'): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 32) || 'run';
  return `${safe}-${stamp}-${randomBytes(2).toString('hex')}`;
}

export const runDirOf = (runsDir: string, runId: string): string => path.join(path.resolve(runsDir), validateRunId(runId));
export const stageDirOf = (runDir: string, iteration: number, stage: StageName): string => path.join(runDir, `iter-${iteration}`, stage);

export interface StageRecord extends StageStatus {
  attempts?: number;
}

export interface RunRecord {
  runId: string;
  createdAt: string;
  updatedAt: string;
  status: RunState | 'created';
  error?: string;
  configPath?: string;
  configHash: string;
  config: unknown;
  plan: RunPlan;
  versions: Record<string, string>;
  workflowRunIds: string[];
  /** Workflow executions of this run (one per iteration with continue-as-new), with the bundle build id that ran each. */
  executions?: { workflowRunId: string; startedAt: string; fromIteration?: number; buildId?: string }[];
  /** Control requests in force (pause, iteration count, stages to skip), as the workflow accepted them. */
  control?: RunControl & { updatedAt: string };
  /** Static inputs (prompts, guidance, eval data, model folders) hashed once per run: src/inputPins.ts. */
  inputs?: InputPins;
  /** Each `resume --config FILE` that changed the config, oldest first (src/client/replan.ts). */
  replans?: ReplanRecord[];
  /** Each resume that found the run folder somewhere other than where it last ran (moved or mounted elsewhere). */
  relocations?: { from: string; to: string; at: string }[];
  stages: StageRecord[];
}

export interface ReplanRecord {
  at: string;
  configPath: string;
  fromConfigHash: string;
  toConfigHash: string;
  /** Dotted config keys whose value changed (defaults applied on both sides). */
  changedKeys: string[];
  /** Stages whose own spec (params or static inputs) changed; later stages run again only if their inputs change. */
  changedStages: StageName[];
  addedStages?: StageName[];
  removedStages?: StageName[];
}

/**
 * A recorded plan, placed in the folder its run.json was found in. The run folder is wherever `<runsDir>/<runId>` is
 * now: plan.runDir in run.json (absolute, from older versions too) only says where the run last ran, so a folder
 * that was moved or mounted elsewhere resumes in place.
 */
export const locatePlan = (plan: RunPlan, runDir: string): RunPlan => ({ ...plan, runDir: path.resolve(runDir) });

export async function writeFileAtomic(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, file);
}

export const writeJsonAtomic = (file: string, value: unknown): Promise<void> => writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');

export async function readRun(runDir: string): Promise<RunRecord> {
  const file = path.join(runDir, 'run.json');
  try {
    return JSON.parse(await readFile(file, 'utf8')) as RunRecord;
  } catch (e) {
    throw new Error(`no run record at ${file}: ${(e as Error).message}`);
  }
}

// run.json is read-modify-written by one control worker; serialise updates within this process.
let queue: Promise<unknown> = Promise.resolve();
export function updateRun(runDir: string, fn: (r: RunRecord) => void): Promise<RunRecord> {
  const next = queue.then(async () => {
    const rec = await readRun(runDir);
    fn(rec);
    rec.updatedAt = new Date().toISOString();
    await writeJsonAtomic(path.join(runDir, 'run.json'), rec);
    return rec;
  });
  queue = next.catch(() => undefined);
  return next;
}

export function upsertStage(rec: RunRecord, s: StageStatus): void {
  const i = rec.stages.findIndex((x) => x.iteration === s.iteration && x.stage === s.stage);
  if (i >= 0) {
    const prev = rec.stages[i]!;
    rec.stages[i] = { ...prev, ...s, attempts: s.status === 'running' ? (prev.attempts ?? 0) + 1 : prev.attempts };
  } else rec.stages.push({ ...s, attempts: s.status === 'running' ? 1 : 0 });
}

export async function listRuns(runsDir: string): Promise<RunRecord[]> {
  let names: string[];
  try {
    names = await readdir(path.resolve(runsDir));
  } catch {
    return [];
  }
  const out: RunRecord[] = [];
  for (const n of names.sort()) {
    if (!RUN_ID_RE.test(n)) continue;
    try {
      out.push(await readRun(path.join(path.resolve(runsDir), n)));
    } catch {
      // a folder without run.json is not a run
    }
  }
  return out;
}
