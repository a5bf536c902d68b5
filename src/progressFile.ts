// A running stage's live progress as a small file in its stage folder (`progress.json`), written atomically by the
// activity about once a second and read by `status` and the progress view from the run folder: progress reaches the
// terminal within seconds, however the SDK throttles heartbeats to the server (docs/architecture.md, Live progress).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ShardRef, StageHeartbeat, StageName } from '../workflows/types';
import { shardDirName } from '../workflows/plan';
import { stageDirOf, writeJsonAtomic } from './runStore';

export const PROGRESS_FILE = 'progress.json';

/** The stage folder's progress.json, or a shard's, in the shard's own folder (shards run at once: one file each). */
export const progressFileOf = (runDir: string, iteration: number, stage: StageName, shard?: ShardRef): string =>
  path.join(stageDirOf(runDir, iteration, stage), ...(shard ? [shardDirName(shard)] : []), PROGRESS_FILE);

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

/**
 * One line for a stage from its shards' progress (each the freshest of its file and heartbeat): counts and rates
 * summed over the shards that count in the same unit, the newest shard's phase otherwise. The merge (a beat with no
 * shard that started after the last shard's news) stands alone.
 */
export function combineShards(beats: StageHeartbeat[]): StageHeartbeat | undefined {
  const shards = beats.filter((b) => b.shard);
  const whole = beats.find((b) => !b.shard);
  if (!shards.length) return whole;
  const lastShardNews = Math.max(...shards.map(beatTime));
  if (whole && whole.startedAtMs >= lastShardNews) return whole;
  const newest = shards.reduce((a, b) => (beatTime(b) > beatTime(a) ? b : a));
  const unit = shards.find((b) => b.total > 0)?.unit;
  const counting = shards.filter((b) => b.total > 0 && b.unit === unit);
  const base = { ...newest, shard: undefined, shards: shards.length };
  if (!counting.length) return base;
  const sum = (f: (b: StageHeartbeat) => number): number => counting.reduce((n, b) => n + f(b), 0);
  const { step: _s, stepStartedAtMs: _t, rate: _r, ...rest } = base;
  const rate = counting.every((b) => b.rate !== undefined) ? sum((b) => b.rate ?? 0) : undefined;
  return {
    ...rest, phase: 'running', unit: unit!, done: sum((b) => b.done), total: sum((b) => b.total),
    updatedAtMs: Math.max(...counting.map((b) => b.updatedAtMs)), ...(rate !== undefined ? { rate } : {}),
  };
}

const beatTime = (h: StageHeartbeat): number => Math.max(h.updatedAtMs, h.phaseStartedAtMs ?? 0, h.stepStartedAtMs ?? 0);
