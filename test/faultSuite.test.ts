// Negative controls for the fault suite's measurements: a finished stage that ran again, and an artifact that changed,
// are seen (so the table's "0 recomputed" and "identical" can fail).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { artifacts, differences, finishedStages, recomputed, type Run } from './faultSuite';
import { tmpDir } from './helpers';

async function stage(runDir: string, name: string, sha: string, attempts: number[]): Promise<void> {
  const dir = path.join(runDir, 'iter-1', name);
  await mkdir(path.join(dir, 'logs'), { recursive: true });
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify({ outputs: [{ name: 'out', sha256: sha }] }));
  for (const n of attempts) await writeFile(path.join(dir, 'logs', `attempt-${n}.worker.json`), '{}');
}

describe('fault suite measurements', () => {
  it('count a finished stage that ran again: a new attempt, or a rewritten manifest', async () => {
    const runDir = await tmpDir();
    const run: Run = { address: '', config: '', runsDir: path.dirname(runDir), runId: path.basename(runDir), runDir };
    for (const s of ['sample', 'score', 'pairs']) await stage(runDir, s, 'a', [1]);
    await mkdir(path.join(runDir, 'iter-1', 'train'), { recursive: true }); // running: no manifest yet
    const snap = await finishedStages(run);
    expect([...snap.keys()].sort()).toEqual(['iter-1/pairs', 'iter-1/sample', 'iter-1/score']);
    expect(await recomputed(run, snap)).toEqual([]);
    await stage(runDir, 'train', 'a', [1]); // not finished at the snapshot: running it is no recomputation
    await writeFile(path.join(runDir, 'iter-1', 'score', 'logs', 'attempt-2.worker.json'), '{}');
    await new Promise((r) => setTimeout(r, 20));
    await stage(runDir, 'pairs', 'a', []);
    expect((await recomputed(run, snap)).sort()).toEqual(['iter-1/pairs', 'iter-1/score']);
  });

  it('tell artifacts that differ from the undisturbed run, and stages missing on either side', async () => {
    const a = await tmpDir();
    const b = await tmpDir();
    for (const s of ['sample', 'score']) await stage(a, s, 'x', [1]);
    await stage(b, 'sample', 'x', [1]);
    await stage(b, 'score', 'y', [1]);
    await stage(b, 'pairs', 'x', [1]);
    expect(differences(await artifacts(a), await artifacts(a))).toEqual([]);
    expect(differences(await artifacts(b), await artifacts(a))).toEqual(['iter-1/pairs', 'iter-1/score']);
  });
});
