// Manifest checks. The hashes themselves (files, folders, spec JSON) are defined once in src/contentHash.ts, shared
// with src/ and matched by scripts/ratioloop_py (io.sha256_path, stage.spec_hash).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { OutputRef, StageManifest } from '../workflows/types';
import { hashPath, type HashOptions } from '../src/contentHash';

export { canonicalJson, hashPath, sha256File, specHash } from '../src/contentHash';

export async function readManifest(dir: string): Promise<StageManifest | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as StageManifest;
  } catch {
    return undefined;
  }
}

/** Why a manifest does not prove the stage done (undefined = it does). */
export async function manifestProblem(manifest: StageManifest | undefined, expectedSpecHash: string, opts: HashOptions = {}): Promise<string | undefined> {
  if (!manifest) return 'no manifest';
  if (manifest.specHash !== expectedSpecHash) return 'spec changed since the manifest was written';
  for (const out of manifest.outputs) {
    let actual: string;
    try {
      actual = await hashPath(out.path, opts);
    } catch {
      return `output ${out.path} is missing`;
    }
    if (actual !== out.sha256) return `output ${out.path} changed after the stage finished`;
  }
  return undefined;
}

export function outputsByName(manifest: StageManifest): Record<string, OutputRef> {
  const map: Record<string, OutputRef> = {};
  for (const o of manifest.outputs) map[o.name] = o;
  return map;
}
