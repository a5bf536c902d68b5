// Reading a run folder for the report: stage manifests, the output files they name, and JSON lines streamed row by
// row. Nothing here throws for a missing or damaged file: the report shows what exists and says what does not.
import { createReadStream } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { StageName } from '../../workflows/types';
import { stageDirOf } from '../runStore';

export interface StageFiles {
  /** Output name → path on this machine (manifest outputs, moved along with the run folder when needed). */
  outputs: Record<string, string>;
  metrics: Record<string, unknown>;
  extra: Record<string, unknown>;
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

export async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** A stage's manifest, or undefined when the stage never finished (no manifest, or an unreadable one). A manifest
 *  holds absolute paths; a run folder copied to another machine keeps them relative to its stage folder, so a path
 *  that does not exist here is looked up under this stage folder by its part below `iter-<k>/<stage>/`. */
export async function stageFiles(runDir: string, iteration: number, stage: StageName): Promise<StageFiles | undefined> {
  const dir = stageDirOf(runDir, iteration, stage);
  const m = await readJson(path.join(dir, 'manifest.json'));
  if (!m || typeof m !== 'object') return undefined;
  const man = m as Record<string, unknown>;
  const outputs: Record<string, string> = {};
  for (const o of Array.isArray(man.outputs) ? man.outputs : []) {
    const ref = o as { name?: unknown; path?: unknown };
    if (typeof ref.name !== 'string' || typeof ref.path !== 'string') continue;
    let p = ref.path;
    if (!(await exists(p))) {
      const marker = `${path.sep}iter-${iteration}${path.sep}${stage}${path.sep}`;
      const at = p.lastIndexOf(marker);
      const rel = at >= 0 ? p.slice(at + marker.length) : path.isAbsolute(p) ? path.basename(p) : p;
      p = path.join(dir, rel);
    }
    outputs[ref.name] = p;
  }
  const metrics = man.metrics && typeof man.metrics === 'object' ? (man.metrics as Record<string, unknown>) : {};
  return { outputs, metrics, extra: man };
}

export interface JsonlRead {
  rows: number;
  /** Lines that were not a JSON object (a damaged file): counted, never fatal. */
  bad: number;
  missing: boolean;
}

/** Calls `each` for every JSON object line of a file, streaming (score files of a real run hold millions of numbers). */
export async function eachJsonl(file: string | undefined, each: (row: Record<string, unknown>) => void): Promise<JsonlRead> {
  const res: JsonlRead = { rows: 0, bad: 0, missing: false };
  if (!file || !(await exists(file))) return { ...res, missing: true };
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (!line.trim()) continue;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch {
        res.bad++;
        continue;
      }
      if (row && typeof row === 'object' && !Array.isArray(row)) {
        res.rows++;
        each(row as Record<string, unknown>);
      } else res.bad++;
    }
  } catch {
    res.bad++; // unreadable midway (a folder, a permission problem): keep what was read
  }
  return res;
}

export const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
