// THE content-hash definition of files and folders (docs/architecture.md, "Content hashes"), used by activities/ and
// src/. scripts/ratioloop_py/io.py sha256_path implements the same definition; test/hash.test.ts checks the two agree
// on one tree. A folder's hash: every regular file below it, symlinks followed to their targets (a Hugging Face
// snapshot is a folder of links into a blob store), names starting with '.' skipped at any depth, as
// "relative/path\0sha256hex\n" lines sorted by the UTF-8 bytes of the relative path, hashed with sha256.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { HashCache } from './hashCache';

export class HashPathError extends Error {}

export interface HashOptions {
  /** Reuse a file's hash while its (device, inode, size, mtime, ctime) is unchanged. */
  cache?: HashCache;
  /** Called after each file: files hashed so far of all files, bytes of them. */
  onProgress?: (filesDone: number, filesTotal: number, bytesDone: number) => void;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

interface Entry {
  rel: string;
  full: string;
}

async function statFollowing(full: string, rel: string): Promise<Awaited<ReturnType<typeof stat>>> {
  try {
    return await stat(full);
  } catch (e) {
    const l = await lstat(full).catch(() => undefined);
    if (l?.isSymbolicLink()) throw new HashPathError(`${rel}: broken symlink (points to ${await readlink(full)})`);
    throw e;
  }
}

// `chain` holds the real paths of the folders above, so a link back up is an error rather than an endless walk.
async function listFiles(dir: string, rel: string, chain: Set<string>, out: Entry[]): Promise<void> {
  for (const name of await readdir(dir)) {
    if (name.startsWith('.')) continue;
    const full = path.join(dir, name);
    const r = rel ? `${rel}/${name}` : name;
    const s = await statFollowing(full, r);
    if (s.isDirectory()) {
      const real = await realpath(full);
      if (chain.has(real)) throw new HashPathError(`${r}: symlink cycle (leads back to ${real})`);
      await listFiles(full, r, new Set([...chain, real]), out);
    } else if (s.isFile()) out.push({ rel: r, full });
    // sockets, fifos and devices carry no content: not part of the hash
  }
}

const byUtf8 = (a: Entry, b: Entry): number => Buffer.compare(Buffer.from(a.rel, 'utf8'), Buffer.from(b.rel, 'utf8'));

/** The files a folder's hash covers, in hash order (relative path, absolute path). */
export async function folderEntries(dir: string): Promise<Entry[]> {
  const out: Entry[] = [];
  await listFiles(dir, '', new Set([await realpath(dir)]), out);
  return out.sort(byUtf8);
}

async function hashOne(file: string, cache: HashCache | undefined): Promise<{ sha: string; size: number }> {
  const s = await stat(file, { bigint: true });
  const hit = cache?.get(s);
  if (hit) return { sha: hit, size: Number(s.size) };
  const sha = await sha256File(file);
  cache?.set(s, sha);
  return { sha, size: Number(s.size) };
}

/** sha256 of a file's bytes, or of a folder (see the definition at the top of this file). */
export async function hashPath(p: string, opts: HashOptions = {}): Promise<string> {
  const s = await statFollowing(p, p);
  if (!s.isDirectory()) {
    const { sha, size } = await hashOne(p, opts.cache);
    opts.onProgress?.(1, 1, size);
    return sha;
  }
  const files = await folderEntries(p);
  const h = createHash('sha256');
  let bytes = 0;
  for (const [i, f] of files.entries()) {
    const { sha, size } = await hashOne(f.full, opts.cache);
    bytes += size;
    h.update(`${f.rel}\0${sha}\n`);
    opts.onProgress?.(i + 1, files.length, bytes);
  }
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

/** sha256 of a stage spec's canonical JSON without outputDir/specHash (stage.py spec_hash is the same). */
export function specHash(spec: Record<string, unknown>): string {
  const { outputDir: _o, specHash: _s, ...keyed } = spec;
  return createHash('sha256').update(canonicalJson(keyed)).digest('hex');
}
