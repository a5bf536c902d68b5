// The one folder-hash definition: TS (src/contentHash.ts) and Python (ratioloop_py/io.py) agree on the same tree, and
// both equal the definition written out by hand; the hash cache is used while a file's stat is unchanged, and only then.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rename, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HashPathError, hashPath } from '../src/contentHash';
import { HashCache } from '../src/hashCache';
import { projectRoot, pythonPath } from '../src/paths';
import { tmpDir } from './helpers';

const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

function pythonHash(p: string): string {
  const code = 'import sys; from ratioloop_py.io import sha256_path; print(sha256_path(sys.argv[1]))';
  return execFileSync(pythonPath(), ['-c', code, p], { cwd: path.join(projectRoot, 'scripts'), encoding: 'utf8' }).trim();
}

function pythonError(p: string): string {
  const code = 'import sys\nfrom ratioloop_py.io import sha256_path\ntry:\n    sha256_path(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)';
  return execFileSync(pythonPath(), ['-c', code, p], { cwd: path.join(projectRoot, 'scripts'), encoding: 'utf8' }).trim();
}

/** A Hugging Face hub cache: snapshots/<rev>/ holds relative symlinks into blobs/ (files and one linked folder). */
async function hubCache(root: string): Promise<string> {
  const repo = path.join(root, 'models--org--tiny');
  const blobs = path.join(repo, 'blobs');
  await mkdir(blobs, { recursive: true });
  const files: Record<string, string> = { 'config.json': '{"n_layer": 2}\n', 'model.safetensors': 'weights'.repeat(1000), 'tokenizer/vocab.txt': 'a\nb\n' };
  const snap = path.join(repo, 'snapshots', 'abc123');
  for (const [rel, text] of Object.entries(files)) {
    await writeFile(path.join(blobs, sha(text)), text);
    await mkdir(path.dirname(path.join(snap, rel)), { recursive: true });
    await symlink(path.relative(path.dirname(path.join(snap, rel)), path.join(blobs, sha(text))), path.join(snap, rel));
  }
  await mkdir(path.join(repo, 'extra'), { recursive: true });
  await writeFile(path.join(repo, 'extra', 'notes.md'), 'linked folder\n');
  await symlink('../../extra', path.join(snap, 'docs'));
  return snap;
}

describe('folder hash definition', () => {
  it('TS and Python agree with the hand-written definition: order by UTF-8 bytes, dot-files skipped, symlinks followed', async () => {
    const dir = await tmpDir();
    const t = path.join(dir, 'tree');
    // "a-c" < "a/b" as strings ('-' 0x2D < '/' 0x2F); a per-folder order would put a/b first. 'é' (U+00E9) sorts
    // after 'z'; the astral '😀' after U+FF5E in UTF-8 (and before it in UTF-16, which is why JS's sort is not used).
    const content: Record<string, string> = { 'a/b': '1', 'a-c': '2', 'z': '3', 'é': '4', '\uff5e': '5', '😀': '6', 'deep/x/y.txt': '7' };
    for (const [rel, text] of Object.entries(content)) {
      await mkdir(path.dirname(path.join(t, rel)), { recursive: true });
      await writeFile(path.join(t, rel), text);
    }
    await mkdir(path.join(t, '.git'), { recursive: true });
    await writeFile(path.join(t, '.git', 'HEAD'), 'skipped');
    await writeFile(path.join(t, 'deep', '.lock'), 'skipped');
    await mkdir(path.join(t, 'empty'));
    await symlink('z', path.join(t, 'link-to-z'));
    await symlink('deep/x', path.join(t, 'link-dir'));
    await symlink('.git/HEAD', path.join(t, 'visible-link-to-dotfile'));

    const lines: [string, string][] = [
      ['a-c', '2'], ['a/b', '1'], ['deep/x/y.txt', '7'], ['link-dir/y.txt', '7'], ['link-to-z', '3'],
      ['visible-link-to-dotfile', 'skipped'], ['z', '3'], ['é', '4'], ['\uff5e', '5'], ['😀', '6'],
    ];
    const expected = sha(lines.map(([rel, text]) => `${rel}\0${sha(text)}\n`).join(''));
    expect(await hashPath(t)).toBe(expected);
    expect(pythonHash(t)).toBe(expected);
    // A file (or a link to one) hashes as its bytes.
    expect(await hashPath(path.join(t, 'link-to-z'))).toBe(sha('3'));
    expect(pythonHash(path.join(t, 'link-to-z'))).toBe(sha('3'));
  });

  it('a snapshot folder of symlinks into a blob store hashes as its files, equal in TS and Python', async () => {
    const snap = await hubCache(await tmpDir());
    const expected = sha([
      `config.json\0${sha('{"n_layer": 2}\n')}\n`,
      `docs/notes.md\0${sha('linked folder\n')}\n`,
      `model.safetensors\0${sha('weights'.repeat(1000))}\n`,
      `tokenizer/vocab.txt\0${sha('a\nb\n')}\n`,
    ].join(''));
    expect(await hashPath(snap)).toBe(expected);
    expect(pythonHash(snap)).toBe(expected);
    expect(expected).not.toBe(sha('')); // the old TS walk skipped links: the empty hash
  });

  it('a broken symlink or a symlink cycle is an error on both sides, not a silently smaller hash', async () => {
    const dir = await tmpDir();
    const broken = path.join(dir, 'broken');
    await mkdir(broken);
    await writeFile(path.join(broken, 'ok'), 'x');
    await symlink('missing-blob', path.join(broken, 'weights'));
    await expect(hashPath(broken)).rejects.toThrow(HashPathError);
    await expect(hashPath(broken)).rejects.toThrow(/weights: broken symlink/);
    expect(pythonError(broken)).toMatch(/^HashPathError weights: broken symlink/);

    const cyc = path.join(dir, 'cycle');
    await mkdir(path.join(cyc, 'sub'), { recursive: true });
    await symlink('..', path.join(cyc, 'sub', 'up'));
    await expect(hashPath(cyc)).rejects.toThrow(/sub\/up: symlink cycle/);
    expect(pythonError(cyc)).toMatch(/^HashPathError sub\/up: symlink cycle/);
  });
});

describe('hash cache', () => {
  const old = new Date(Date.now() - 60_000);

  async function tree(): Promise<{ dir: string; f: string }> {
    const dir = await tmpDir();
    const f = path.join(dir, 'data', 'a.bin');
    await mkdir(path.dirname(f), { recursive: true });
    await writeFile(f, 'aaaa');
    await writeFile(path.join(dir, 'data', 'b.bin'), 'bbbb');
    return { dir, f };
  }

  it('a second hash of an unchanged folder reads no file; the cache survives a save and load', async () => {
    const { dir } = await tree();
    const cache = new HashCache(path.join(dir, '.hash-cache.json'), () => Date.now() + 60_000);
    const first = await hashPath(path.join(dir, 'data'), { cache });
    expect([cache.hits, cache.misses]).toEqual([0, 2]);
    expect(await hashPath(path.join(dir, 'data'), { cache })).toBe(first);
    expect([cache.hits, cache.misses]).toEqual([2, 2]);
    await cache.save();
    const reloaded = await new HashCache(cache.file).load();
    expect(await hashPath(path.join(dir, 'data'), { cache: reloaded })).toBe(first);
    expect(reloaded.hits).toBe(2);
  });

  it('size, mtime, ctime or inode changes invalidate an entry', async () => {
    const { dir, f } = await tree();
    const later = () => Date.now() + 60_000;
    const data = path.join(dir, 'data');
    const cache = new HashCache(undefined, later);
    await hashPath(data, { cache });

    // Same size, mtime put back: the ctime still moved, so the new bytes are read.
    const st = await stat(f);
    await writeFile(f, 'AAAA');
    await utimes(f, st.atime, st.mtime);
    cache.hits = cache.misses = 0;
    expect(await hashPath(data, { cache })).toBe(sha(`a.bin\0${sha('AAAA')}\nb.bin\0${sha('bbbb')}\n`));
    expect(cache.misses).toBe(1);

    await writeFile(f, 'longer'); // size
    cache.hits = cache.misses = 0;
    await hashPath(data, { cache });
    expect(cache.misses).toBe(1);

    await utimes(f, old, old); // mtime (and ctime)
    cache.hits = cache.misses = 0;
    await hashPath(data, { cache });
    expect(cache.misses).toBe(1);

    await writeFile(f + '.new', 'longer'); // a new inode renamed over it
    await rename(f + '.new', f);
    cache.hits = cache.misses = 0;
    await hashPath(data, { cache });
    expect(cache.misses).toBe(1);
  });

  it('a reset (resume --verify) makes a worker that loaded the cache before it read every file again, and nothing it remembered is saved back', async () => {
    const { dir } = await tree();
    const data = path.join(dir, 'data');
    const file = path.join(dir, '.hash-cache.json');
    const later = () => Date.now() + 60_000;
    const worker = new HashCache(file, later);
    await worker.load();
    await hashPath(data, { cache: worker });
    await worker.save();
    const other = await new HashCache(file, later).load(); // a second worker, loaded before the reset, with news to save
    await writeFile(path.join(data, 'c.bin'), 'cccc');
    await hashPath(data, { cache: other });

    await HashCache.reset(file);
    await other.save(); // its entries predate the reset: not written back
    expect(JSON.parse(await readFile(file, 'utf8')).files).toEqual({});
    await worker.refresh(); // what every stage attempt does first
    worker.hits = worker.misses = 0;
    await hashPath(data, { cache: worker });
    expect([worker.hits, worker.misses]).toEqual([0, 3]);
    await worker.save(); // entries of the new epoch are kept
    const after = await new HashCache(file, later).load();
    await hashPath(data, { cache: after });
    expect([after.hits, after.misses]).toEqual([3, 0]);
  });

  it('refresh takes in what another worker saved (same epoch)', async () => {
    const { dir } = await tree();
    const file = path.join(dir, '.hash-cache.json');
    const later = () => Date.now() + 60_000;
    const a = await new HashCache(file, later).load();
    const b = await new HashCache(file, later).load();
    await hashPath(path.join(dir, 'data'), { cache: b });
    await b.save();
    await a.refresh();
    await hashPath(path.join(dir, 'data'), { cache: a });
    expect([a.hits, a.misses]).toEqual([2, 0]);
  });

  it('a file changed within the last 2 s is hashed but not cached (it may change again in the same tick)', async () => {
    const { dir } = await tree();
    const cache = new HashCache();
    await hashPath(path.join(dir, 'data'), { cache });
    await hashPath(path.join(dir, 'data'), { cache });
    expect(cache.hits).toBe(0);
  });
});
