// Content hashes and manifest checks; the same hashing as scripts/ratioloop_py (io.sha256_path, stage.spec_hash),
// so a reference written by Python verifies in TS and the other way round.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { OutputRef, StageManifest } from '../workflows/types';

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, r)));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

/** sha256 of a file, or of a folder: sorted "relpath\0filehash\n" lines, dot-files skipped. */
export async function hashPath(p: string): Promise<string> {
  const s = await stat(p);
  if (s.isFile()) return sha256File(p);
  const h = createHash('sha256');
  const files = (await listFiles(p)).filter((r) => !r.split('/').some((part) => part.startsWith('.'))).sort();
  for (const rel of files) h.update(`${rel}\0${await sha256File(path.join(p, rel))}\n`);
  return h.digest('hex');
}

/** Key-sorted compact JSON, byte-identical to Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && Number.isInteger(value)) return String(value);
    if (typeof value === 'number') return pyFloat(value);
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

// Python prints floats with repr(): 0.1 → "0.1", 1e-06 → "1e-06", 1e+20 → "1e+20".
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : x < 0 ? '-Infinity' : 'NaN';
  const abs = Math.abs(x);
  if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) {
    const [mant, exp] = x.toExponential().split('e') as [string, string];
    const e = Number(exp);
    return `${mant}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  }
  return String(x);
}

export function specHash(spec: Record<string, unknown>): string {
  const { outputDir: _o, specHash: _s, ...keyed } = spec;
  return createHash('sha256').update(canonicalJson(keyed)).digest('hex');
}

export async function readManifest(dir: string): Promise<StageManifest | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as StageManifest;
  } catch {
    return undefined;
  }
}

/** Why a manifest does not prove the stage done (undefined = it does). */
export async function manifestProblem(manifest: StageManifest | undefined, expectedSpecHash: string): Promise<string | undefined> {
  if (!manifest) return 'no manifest';
  if (manifest.specHash !== expectedSpecHash) return 'spec changed since the manifest was written';
  for (const out of manifest.outputs) {
    let actual: string;
    try {
      actual = await hashPath(out.path);
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
