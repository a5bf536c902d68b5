// A running stage's live progress as a small file in its stage folder (`progress.json`), written atomically by the
// activity about once a second and read by `status` and the progress view from the run folder: progress reaches the
// terminal within seconds, however the SDK throttles heartbeats to the server (docs/architecture.md, Live progress).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { StageHeartbeat, StageName } from '../workflows/types';
import { stageDirOf, writeJsonAtomic } from './runStore';

export const PROGRESS_FILE = 'progress.json';

export const progressFileOf = (runDir: string, iteration: number, stage: StageName): string =>
  path.join(stageDirOf(runDir, iteration, stage), PROGRESS_FILE);

export const writeProgressFile = (file: string, beat: StageHeartbeat): Promise<void> => writeJsonAtomic(file, beat);

/** The file's heartbeat, or undefined when there is none or it is not one (a half-read file cannot happen: atomic). */
export async function readProgressFile(file: string): Promise<StageHeartbeat | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    return undefined;
  }
  const b = raw as Partial<StageHeartbeat> | null;
  if (!b || typeof b !== 'object' || typeof b.stage !== 'string' || typeof b.iteration !== 'number') return undefined;
  if (typeof b.done !== 'number' || typeof b.total !== 'number' || typeof b.updatedAtMs !== 'number' || typeof b.startedAtMs !== 'number') return undefined;
  return b as StageHeartbeat;
}

/** The fresher of two views of one stage's progress (the file is local and fast; a heartbeat may come from anywhere). */
export function fresher(a: StageHeartbeat | undefined, b: StageHeartbeat | undefined): StageHeartbeat | undefined {
  if (!a) return b;
  if (!b) return a;
  return beatTime(b) > beatTime(a) ? b : a;
}

const beatTime = (h: StageHeartbeat): number => Math.max(h.updatedAtMs, h.phaseStartedAtMs ?? 0, h.stepStartedAtMs ?? 0);
