// The fault suite's hooks (activities/faultHooks.ts) do nothing unless RATIOLOOP_FAULT asks, and then only where it names.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assertVisible, faultPoint } from '../activities/faultHooks';
import { tmpDir } from './helpers';

const log = (runDir: string) => readFile(path.join(runDir, 'faults.log'), 'utf8').catch(() => '');

describe('fault hooks', () => {
  afterEach(() => {
    delete process.env.RATIOLOOP_FAULT;
    delete process.env.RATIOLOOP_FAULT_HOLD_S;
  });

  it('are inert without RATIOLOOP_FAULT', async () => {
    const runDir = await tmpDir();
    const t = Date.now();
    await faultPoint('hashing-inputs', { runDir, stage: 'score', iteration: 1 });
    await assertVisible(path.join(runDir, 'x'), { runDir, stage: 'score', iteration: 1 });
    expect(Date.now() - t).toBeLessThan(50);
    expect(await log(runDir)).toBe('');
  });

  it('hold only at the named point, stage and iteration, noting it in faults.log', async () => {
    const runDir = await tmpDir();
    process.env.RATIOLOOP_FAULT = 'hold@hashing-inputs:score:2';
    process.env.RATIOLOOP_FAULT_HOLD_S = '0.2';
    for (const [stage, iteration] of [['score', 1], ['sample', 2]] as const) await faultPoint('hashing-inputs', { runDir, stage, iteration });
    await faultPoint('after-manifest-rename', { runDir, stage: 'score', iteration: 2 });
    expect(await log(runDir)).toBe('');
    const t = Date.now();
    await faultPoint('hashing-inputs', { runDir, stage: 'score', iteration: 2 });
    expect(Date.now() - t).toBeGreaterThanOrEqual(190);
    expect(await log(runDir)).toBe(`reached hashing-inputs score 2 ${process.pid}\n`);
  });

  it('hide a path and what is under it, not a sibling that shares its prefix', async () => {
    const runDir = await tmpDir();
    const hidden = path.join(runDir, 'iter-1', 'pairs');
    process.env.RATIOLOOP_FAULT = `hold@nowhere,hide@${hidden}`;
    const w = { runDir, stage: 'train', iteration: 1 };
    await assertVisible(`${hidden}-old/train.jsonl`, w);
    await expect(assertVisible(hidden, w)).rejects.toThrow(/hidden on this worker/);
    await expect(assertVisible(path.join(hidden, 'train.jsonl'), w)).rejects.toThrow(/hidden on this worker/);
    expect((await log(runDir)).split('\n').filter(Boolean)).toHaveLength(2);
  });
});
