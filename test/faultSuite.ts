// The fault suite's measurements (test/faults.test.ts): runs set up from the embedded default, what a fault left (which
// finished stages ran again, whether the artifacts equal an undisturbed run's), and the table it prints.
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { projectRoot } from '../src/paths';
import type { RunRecord } from '../src/runStore';
import { fixtureScripts, uniqueQueues } from './helpers';
import { exists, result } from './processes';

export interface Run {
  address: string;
  config: string;
  runsDir: string;
  runId: string;
  runDir: string;
}

/** Short retries and heartbeats: a killed worker's stage is retried within seconds, not minutes. */
export const FAST_TIMEOUTS = { default: { startToClose: '10m', heartbeat: '5s', initialInterval: '300ms', maxAttempts: 10 } };

/**
 * configs/tiny.yaml (the embedded default: SmolLM2 as policy, strong, weak, router and judge, the demo prompts, 2
 * iterations, its seed) in `dir`, with its paths made absolute, its own queues and fast retries; `edit` changes the rest.
 */
export async function tinyCopy(dir: string, address: string, runId: string, edit: (raw: Record<string, unknown>) => void = () => undefined): Promise<Run> {
  const configsDir = path.join(projectRoot, 'configs');
  const raw = parse(await readFile(path.join(configsDir, 'tiny.yaml'), 'utf8')) as Record<string, unknown>;
  const models = raw.models as Record<string, { path?: string }>;
  for (const m of Object.values(models)) if (m.path) m.path = path.resolve(configsDir, m.path);
  const prompts = raw.prompts as { path: string };
  prompts.path = path.resolve(configsDir, prompts.path);
  const runsDir = path.join(dir, 'runs');
  Object.assign(raw, { runsDir, taskQueues: uniqueQueues(), timeouts: FAST_TIMEOUTS });
  edit(raw);
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, stringify(raw));
  return { address, config, runsDir, runId, runDir: path.join(runsDir, runId) };
}

/**
 * Worker environment that runs the fixture stage programs (test/fixtures/stages), steered by `fixture`, with `fault`.
 * The stage-folder lease goes stale 4 s after its last renewal, inside the 5 s heartbeat timeout (as the defaults, 60 s
 * inside 2 minutes): a dead worker's retry finds the folder free.
 */
export function fixtureEnv(fixture: Record<string, unknown> = {}, fault?: string): Record<string, string> {
  return {
    RATIOLOOP_SCRIPTS_DIR: fixtureScripts,
    RATIOLOOP_FIXTURE: JSON.stringify(fixture),
    RATIOLOOP_LEASE_TTL_S: '3',
    RATIOLOOP_LEASE_SKEW_S: '1',
    ...(fault ? { RATIOLOOP_FAULT: fault } : {}),
  };
}

/** Worker environment for the real stage programs (scripts/), with `fault`; the lease timing of fixtureEnv. */
export function realEnv(fault?: string): Record<string, string> {
  const { RATIOLOOP_SCRIPTS_DIR: _scripts, RATIOLOOP_FIXTURE: _fixture, ...env } = fixtureEnv({}, fault);
  return env;
}

const text = (f: string): Promise<string> => readFile(f, 'utf8').catch(() => '');

/** Lines of <runDir>/faults.log (written by the fault hooks) and invocations.log (by the fixture stages). */
export const faultLog = (run: Run): Promise<string> => text(path.join(run.runDir, 'faults.log'));
export const invocations = (run: Run): Promise<string> => text(path.join(run.runDir, 'invocations.log'));
export const record = async (run: Run): Promise<RunRecord> => JSON.parse(await readFile(path.join(run.runDir, 'run.json'), 'utf8')) as RunRecord;

async function stageDirs(runDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const it of (await readdir(runDir).catch(() => [])).filter((d) => /^iter-\d+$/.test(d)).sort()) {
    for (const s of await readdir(path.join(runDir, it)).catch(() => [])) out.push(path.join(it, s));
  }
  return out;
}

/** What proves a finished stage was not run again: its manifest file and every attempt that ran it (worker.json). */
export type Snapshot = Map<string, string>;
async function fingerprint(runDir: string, stage: string): Promise<string> {
  const m = await stat(path.join(runDir, stage, 'manifest.json'));
  const logs = path.join(runDir, stage, 'logs');
  const attempts: string[] = [];
  for (const f of (await readdir(logs).catch(() => [])).filter((f) => f.endsWith('.worker.json')).sort()) attempts.push(`${f}@${(await stat(path.join(logs, f))).mtimeMs}`);
  return `${m.ino}:${m.mtimeMs} ${attempts.join(' ')}`;
}

/** The finished stages (a manifest exists) at the moment of the fault. */
export async function finishedStages(run: Run): Promise<Snapshot> {
  const snap: Snapshot = new Map();
  for (const s of await stageDirs(run.runDir)) if (await exists(path.join(run.runDir, s, 'manifest.json'))) snap.set(s, await fingerprint(run.runDir, s));
  return snap;
}

/** Stages that were finished at the snapshot and ran again since (an attempt started, or the manifest was rewritten). */
export async function recomputed(run: Run, snap: Snapshot): Promise<string[]> {
  const again: string[] = [];
  for (const [s, before] of snap) if ((await fingerprint(run.runDir, s).catch(() => 'gone')) !== before) again.push(s);
  return again;
}

/** Every stage's outputs as name=sha256, by iter-k/stage. */
export async function artifacts(runDir: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const s of await stageDirs(runDir)) {
    const m = await text(path.join(runDir, s, 'manifest.json'));
    if (!m) continue;
    out[s] = (JSON.parse(m) as { outputs: { name: string; sha256: string }[] }).outputs.map((o) => `${o.name}=${o.sha256}`).sort();
  }
  return out;
}

/** The stages whose outputs differ from the undisturbed run's (a stage missing on either side counts). */
export function differences(a: Record<string, string[]>, b: Record<string, string[]>): string[] {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

export type Outcome = 'completed' | 'cancelled' | 'failed';
/** How the run ended, as Temporal reports it and as run.json records it (both must agree). */
export async function outcome(run: Run): Promise<{ outcome: Outcome; error?: string }> {
  let temporal: Outcome;
  let error: string | undefined;
  try {
    temporal = (await result(run.address, run.runId)).status === 'completed' ? 'completed' : 'failed';
  } catch (e) {
    const err = e as Error & { cause?: Error };
    temporal = /cancel/i.test(err.cause?.constructor.name ?? '') || /cancel/i.test(err.message) ? 'cancelled' : 'failed';
    error = err.cause?.message ?? err.message;
  }
  const recorded = (await record(run)).status;
  if (recorded !== temporal) return { outcome: 'failed', error: `Temporal says ${temporal}, run.json says ${recorded}${error ? `: ${error}` : ''}` };
  return { outcome: temporal, ...(error ? { error } : {}) };
}

export interface Row {
  fault: string;
  stages: 'fixture' | 'real';
  outcome: string;
  recomputed: number;
  identical: 'yes' | 'no';
  seconds: number;
  note: string;
  /** The row is what it must be: the expected outcome, 0 recomputed, identical artifacts. */
  green: boolean;
}

export function table(rows: readonly Row[]): string {
  const head = ['fault', 'stages', 'outcome', 'finished stages recomputed', 'artifacts identical', 'wall s', 'note'];
  const cells = rows.map((r) => [r.fault, r.stages, r.outcome, String(r.recomputed), r.identical, r.seconds.toFixed(0), r.note]);
  return [head, head.map(() => '---'), ...cells].map((c) => `| ${c.join(' | ')} |`).join('\n');
}
