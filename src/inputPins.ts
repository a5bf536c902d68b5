// Static inputs pinned in run.json: prompts, guidance, eval data, the iteration-0 policy and every local model folder
// are hashed once when the run starts (or at the first resume of a run from before pinning) and their sha256 recorded
// under `inputs`. Every stage attempt that uses one re-hashes it (a stat per file through the hash cache) and fails
// with BadInput when it differs, and `resume` checks them all before it starts: a run's results never silently mix two
// versions of a model or a prompt set. `resume --accept-input-changes` re-pins on purpose (docs/architecture.md).
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { RunPlan } from '../workflows/types';
import { hashPath, type HashOptions } from './contentHash';
import { HASH_CACHE_FILE, HashCache } from './hashCache';
import { readRun } from './runStore';

export interface PinnedInput {
  path: string;
  sha256: string;
  pinnedAt: string;
  /** Earlier pins of the same path, replaced by `resume --accept-input-changes`, oldest first. */
  previous?: { sha256: string; pinnedAt: string; replacedAt: string }[];
}

export type InputPins = Record<string, PinnedInput>;

export interface InputChange {
  name: string;
  path: string;
  pinned: PinnedInput;
  sha256: string;
}

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

interface ModelLike {
  path?: unknown;
}

/** Local model folders a stage's params name (`params.models.<name>.path`); hub ids and endpoints have none. */
export function modelPaths(params: Record<string, unknown>): Record<string, string> {
  const models = (params.models ?? {}) as Record<string, ModelLike | null | undefined>;
  const out: Record<string, string> = {};
  for (const [name, m] of Object.entries(models)) if (m && typeof m.path === 'string' && m.path) out[name] = path.resolve(m.path);
  return out;
}

/** Every static input of a plan by pin name: its static inputs, and `models.<name>` for each local model folder. */
export function staticInputPaths(plan: RunPlan): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, ref] of Object.entries(plan.staticInputs)) if (ref) out[name] = path.resolve(ref.path);
  for (const stage of plan.stages) {
    for (const [name, p] of Object.entries(modelPaths(plan.stagePlans[stage].params))) out[`models.${name}`] ??= p;
  }
  // The policy folder is pinned once, as `policy`.
  if (out.policy && out['models.policy'] === out.policy) delete out['models.policy'];
  return out;
}

export class InputChangedError extends Error {
  constructor(readonly changes: InputChange[], runId: string) {
    super(changes.map((c) => changeText(c, runId)).join('\n'));
    this.name = 'InputChangedError';
  }
}

export function changeText(c: InputChange, runId: string): string {
  return `input ${c.name} changed since the run started: ${c.path} had sha256 ${c.pinned.sha256.slice(0, 12)}… when pinned (${c.pinned.pinnedAt}), now ${c.sha256.slice(0, 12)}…. ` +
    `Put the original back, or go on with the new content: ratioloop resume ${runId} --accept-input-changes (stages that take it as an input run again)`;
}

export interface PinOptions {
  /** The run's hash cache; omitted, every file is read (`resume --verify`). */
  cache?: HashOptions['cache'];
  /** Record changed contents as the new pins (keeping the old ones in `previous`) instead of reporting them. */
  accept?: boolean;
  /** Called when an input takes a while to hash (a 16 GB model folder without a cache). */
  onSlow?: (name: string, p: string) => void;
  now?: () => Date;
}

/**
 * Pin every static input of `plan` not pinned at its path yet, and re-hash the pinned ones. Returns the pins to record
 * and the inputs whose content differs from their pin (with `accept`, already re-pinned).
 */
export async function pinInputs(plan: RunPlan, existing: InputPins | undefined, opts: PinOptions = {}): Promise<{ pins: InputPins; changes: InputChange[]; unseen: string[] }> {
  const at = (opts.now ?? (() => new Date()))().toISOString();
  const pins: InputPins = {};
  const changes: InputChange[] = [];
  const unseen: string[] = [];
  const byPath = new Map<string, string>(); // one folder often serves several models (the demo's four): hash it once
  for (const [name, p] of Object.entries(staticInputPaths(plan))) {
    if (!(await exists(p))) {
      unseen.push(name); // not visible from here (--no-preflight on a host without the workers' mounts)
      if (existing?.[name]) pins[name] = existing[name];
      continue;
    }
    let sha256 = byPath.get(p);
    if (sha256 === undefined) {
      const slow = setTimeout(() => opts.onSlow?.(name, p), 3_000);
      try {
        sha256 = await hashPath(p, opts.cache ? { cache: opts.cache } : {});
      } finally {
        clearTimeout(slow);
      }
      byPath.set(p, sha256);
    }
    const pinned = existing?.[name];
    if (!pinned || pinned.path !== p) {
      pins[name] = { path: p, sha256, pinnedAt: at }; // new, or a re-plan pointed it elsewhere: a new input
    } else if (pinned.sha256 === sha256) {
      pins[name] = pinned;
    } else {
      changes.push({ name, path: p, pinned, sha256 });
      pins[name] = opts.accept
        ? { path: p, sha256, pinnedAt: at, previous: [...(pinned.previous ?? []), { sha256: pinned.sha256, pinnedAt: pinned.pinnedAt, replacedAt: at }] }
        : pinned;
    }
  }
  // Pins of inputs the plan no longer names are kept: the record of what earlier iterations used.
  for (const [name, pin] of Object.entries(existing ?? {})) if (!(name in pins)) pins[name] = pin;
  return { pins, changes, unseen };
}

/** The pins of a run folder's run.json; none when there is no record (a stage run outside a run) or it predates pins. */
export async function readPins(runDir: string): Promise<InputPins> {
  try {
    return (await readRun(runDir)).inputs ?? {};
  } catch {
    return {};
  }
}

/** The pin of a path, with its name, if the run pinned it (`prefer`: the name to report when several pin that path). */
export function pinOf(pins: InputPins, p: string, prefer?: string): { name: string; pin: PinnedInput } | undefined {
  const abs = path.resolve(p);
  const preferred = prefer ? pins[prefer] : undefined;
  if (prefer && preferred?.path === abs) return { name: prefer, pin: preferred };
  for (const [name, pin] of Object.entries(pins)) if (pin.path === abs) return { name, pin };
  return undefined;
}

export interface RunPinOptions {
  /** `resume --verify`: reset the run's hash cache first, so this and the stages read every byte (each file once). */
  verify?: boolean;
  /** `resume --accept-input-changes`. */
  accept?: boolean;
  onSlow?: (name: string, p: string) => void;
  /** Told the inputs this host cannot see (left unpinned; the stages check only what was pinned). */
  onUnseen?: (names: string[]) => void;
}

/** The pins `run` and `resume` record in run.json; InputChangedError when a pinned input changed (and not accepted). */
export async function pinRunInputs(plan: RunPlan, existing: InputPins | undefined, opts: RunPinOptions = {}): Promise<InputPins> {
  const file = path.join(plan.runDir, HASH_CACHE_FILE);
  if (opts.verify) await HashCache.reset(file);
  // After a reset the cache is empty: every byte is read here, once, and the stages reuse what this pass hashed.
  const cache = await new HashCache(file).load();
  const { pins, changes, unseen } = await pinInputs(plan, existing, { cache, ...(opts.accept ? { accept: true } : {}), ...(opts.onSlow ? { onSlow: opts.onSlow } : {}) });
  if (unseen.length) opts.onUnseen?.(unseen);
  await cache.save().catch(() => undefined); // only a cache
  if (changes.length && !opts.accept) throw new InputChangedError(changes, plan.runId);
  return pins;
}
