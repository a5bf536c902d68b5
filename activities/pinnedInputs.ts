// A stage attempt's check of the run's pinned static inputs (src/inputPins.ts): what it is about to use must still
// hash to what run.json recorded when the run started. Read-only: only the CLI writes pins (at run and resume).
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { InputRef, StageRequest } from '../workflows/types';
import { hashPath, type HashOptions } from '../src/contentHash';
import { changeText, modelPaths, pinOf, readPins } from '../src/inputPins';
import { inputNotVisible } from './stageFailure';

/**
 * Throws BadInput (not retried: the content is wrong, on every worker) when a pinned input changed. Covers the
 * request's static inputs (hashed already, in `hashed`) and the model folders its params name that no input replaces
 * (the strong and weak models, the judge): those are part of no spec hash, so this is their only guard.
 */
export async function checkPinnedInputs(req: StageRequest, hashed: Record<string, Required<InputRef>>, opts: HashOptions): Promise<void> {
  const pins = await readPins(req.runDir);
  if (!Object.keys(pins).length) return; // a run from before pins, or a stage outside a run
  const now = new Map<string, { sha256: string; name: string }>(); // path → content now, and the pin name to report
  for (const [name, ref] of Object.entries(req.inputs)) if (!ref.sha256 && hashed[name]) now.set(hashed[name].path, { sha256: hashed[name].sha256, name });
  for (const [name, p] of Object.entries(modelPaths(req.params))) {
    if (name in req.inputs || now.has(p) || !pinOf(pins, p)) continue;
    try {
      await stat(p);
    } catch {
      throw inputNotVisible(`models.${name}`, p);
    }
    now.set(p, { sha256: await hashPath(p, opts), name: `models.${name}` });
  }
  for (const [p, { sha256, name }] of now) {
    const hit = pinOf(pins, p, name);
    if (hit && hit.pin.sha256 !== sha256) {
      throw ApplicationFailure.nonRetryable(changeText({ name: hit.name, path: path.resolve(p), pinned: hit.pin, sha256 }, req.runId), 'BadInput');
    }
  }
}
