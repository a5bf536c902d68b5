// Per-file content hashes remembered by (device, inode, size, mtime, ctime), so skip checks and resume cost a stat per
// file instead of re-reading 16 GB checkpoints. Persisted as one JSON file (a run's `.hash-cache.json`); losing it, or
// two workers overwriting each other's copy, only costs a re-hash.
import type { BigIntStats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './runStore';

interface CacheEntry {
  size: string;
  mtimeNs: string;
  ctimeNs: string;
  sha256: string;
}

/** A file changed less than this before it was hashed may change again within the same timestamp tick: not cached. */
const RACY_MS = 2_000n;

export class HashCache {
  private entries = new Map<string, CacheEntry>();
  private dirty = false;
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
    if (!this.file) return this;
    try {
      const obj = JSON.parse(await readFile(this.file, 'utf8')) as { version?: number; files?: Record<string, CacheEntry> };
      if (obj.version === 1 && obj.files) for (const [k, v] of Object.entries(obj.files)) this.entries.set(k, v);
    } catch {
      // no cache yet, or an unreadable one: start empty
    }
    return this;
  }

  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    await writeFileAtomic(this.file, JSON.stringify({ version: 1, files: Object.fromEntries(this.entries) }) + '\n');
    this.dirty = false;
  }
}
