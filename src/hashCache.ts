// Per-file content hashes remembered by (device, inode, size, mtime, ctime), so skip checks and resume cost a stat per
// file instead of re-reading 16 GB checkpoints. Persisted as one JSON file (a run's `.hash-cache.json`); losing it, or
// two workers overwriting each other's copy, only costs a re-hash. `resume --verify` resets the file with a new epoch:
// every worker drops what it remembers at its next attempt (refresh), and nothing remembered before is saved back.
import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './runStore';

interface CacheEntry {
  size: string;
  mtimeNs: string;
  ctimeNs: string;
  sha256: string;
}

/** A run's cache, in its folder. */
export const HASH_CACHE_FILE = '.hash-cache.json';

/** A file changed less than this before it was hashed may change again within the same timestamp tick: not cached. */
const RACY_MS = 2_000n;

interface CacheFile {
  version?: number;
  /** Changed by every reset: entries of another epoch predate a full re-hash and are dropped. */
  epoch?: string;
  files?: Record<string, CacheEntry>;
}

async function readCacheFile(file: string): Promise<CacheFile | undefined> {
  try {
    const obj = JSON.parse(await readFile(file, 'utf8')) as CacheFile;
    return obj.version === 1 ? obj : undefined;
  } catch {
    return undefined; // no cache yet, or an unreadable one
  }
}

export class HashCache {
  private entries = new Map<string, CacheEntry>();
  private dirty = false;
  private epoch: string | undefined;
  hits = 0;
  misses = 0;

  constructor(readonly file?: string, private readonly now: () => number = Date.now) {}

  private static key(s: BigIntStats): string {
    return `${s.dev}:${s.ino}`;
  }

  get(s: BigIntStats): string | undefined {
    const e = this.entries.get(HashCache.key(s));
    if (e && e.size === String(s.size) && e.mtimeNs === String(s.mtimeNs) && e.ctimeNs === String(s.ctimeNs)) {
      this.hits++;
      return e.sha256;
    }
    this.misses++;
    return undefined;
  }

  set(s: BigIntStats, sha256: string): void {
    const nowNs = BigInt(this.now()) * 1_000_000n;
    if (nowNs - s.mtimeNs < RACY_MS * 1_000_000n) return;
    this.entries.set(HashCache.key(s), { size: String(s.size), mtimeNs: String(s.mtimeNs), ctimeNs: String(s.ctimeNs), sha256 });
    this.dirty = true;
  }

  async load(): Promise<this> {
    await this.refresh();
    return this;
  }

  /** Take in what other workers saved; if the file was reset since (a new epoch), forget everything remembered here. */
  async refresh(): Promise<void> {
    if (!this.file) return;
    const obj = await readCacheFile(this.file);
    if (!obj) return;
    if (obj.epoch !== this.epoch) {
      this.entries.clear();
      this.dirty = false;
      this.epoch = obj.epoch;
    }
    for (const [k, v] of Object.entries(obj.files ?? {})) if (!this.entries.has(k)) this.entries.set(k, v);
  }

  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    // Reset while we hashed (resume --verify): what we remember may predate it, so it is not written back.
    const onDisk = await readCacheFile(this.file);
    if (onDisk && onDisk.epoch !== this.epoch) return;
    await writeFileAtomic(this.file, JSON.stringify({ version: 1, ...(this.epoch ? { epoch: this.epoch } : {}), files: Object.fromEntries(this.entries) }) + '\n');
    this.dirty = false;
  }

  /** Empty a cache file under a new epoch (`resume --verify`): the next hash of every file reads its bytes. */
  static async reset(file: string): Promise<void> {
    await writeFileAtomic(file, JSON.stringify({ version: 1, epoch: randomBytes(8).toString('hex'), files: {} }) + '\n');
  }
}
