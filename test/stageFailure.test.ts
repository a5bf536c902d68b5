// Retry classification of a failed attempt (activities/stageFailure.ts, activities/stageRetry.ts), without Temporal.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { PythonStageError } from '../activities/pythonStage';
import { toFailure } from '../activities/stageFailure';
import { afterFailure, manifestInvalid, throughputFor, type AttemptContext } from '../activities/stageRetry';
import { tmpDir } from './helpers';

const failed = (message: string, exitCode: number | undefined, signal?: string): ApplicationFailure =>
  toFailure(new PythonStageError(message, exitCode, ['some stderr'], false, signal), { host: 'gpu-7' });

async function ctx(over: Partial<AttemptContext> = {}): Promise<AttemptContext> {
  return { stage: 'sample', outputDir: await tmpDir(), specHash: 'h1', params: { batch_size: 8 }, attempt: 1, activity: 'run-a/3', maxFailures: 3, ...over };
}
const oom = (): ApplicationFailure => failed('out of memory: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', 3);

describe('failure types', () => {
  it('exit 3 is OutOfMemory; a SIGKILL (or 137 from a launcher) without a cancel is ResourceExhausted, saying why', () => {
    expect(oom()).toMatchObject({ type: 'OutOfMemory', nonRetryable: false, message: 'out of memory on gpu-7: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB' });
    for (const f of [failed('sample.py killed by SIGKILL', undefined, 'SIGKILL'), failed('training exited with code 137', 137)]) {
      expect(f.type).toBe('ResourceExhausted');
      expect(f.nonRetryable).toBe(false);
      expect(f.message).toMatch(/killed by SIGKILL, not by a cancel: most likely the kernel's out-of-memory killer .*`dmesg`.* on gpu-7/);
    }
    expect(failed('sample.py killed by SIGTERM', undefined, 'SIGTERM').type).toBe('StageCrashed');
    expect(manifestInvalid('score', 'no manifest')).toMatchObject({ type: 'ManifestInvalid', nonRetryable: true });
  });
});

describe('out of memory', () => {
  it('halves the batch knobs once (score: batch_size and max_batch_tokens), then fails naming them', async () => {
    const a = await ctx({ stage: 'score', params: { batch_size: 8, max_batch_tokens: 8192, reward: 'sum' } });
    const first = await afterFailure(oom(), a);
    expect(first).toMatchObject({ type: 'OutOfMemory', nonRetryable: false });
    expect(first.message).toContain('retrying once with score.batch_size 8 → 4, score.max_batch_tokens 8192 → 4096');
    const t = await throughputFor(a.outputDir, 'h1');
    expect(t).toMatchObject({ params: { batch_size: 4, max_batch_tokens: 4096 }, from: { batch_size: 8, max_batch_tokens: 8192 }, attempt: 1 });
    expect(await throughputFor(a.outputDir, 'another-spec')).toBeUndefined();
    const second = await afterFailure(oom(), { ...a, attempt: 2, throughput: t });
    expect(second.nonRetryable).toBe(true);
    expect(second.message).toContain('not retried (already halved once: score.batch_size is 4, score.max_batch_tokens is 4096): lower score.max_batch_tokens');
    expect((await throughputFor(a.outputDir, 'h1'))?.params).toEqual({ batch_size: 4, max_batch_tokens: 4096 }); // not halved twice
  });

  it('train, pairs and a shard fail at once with what to change; a batch of 1 cannot be halved', async () => {
    const train = await afterFailure(oom(), await ctx({ stage: 'train', params: { per_device_train_batch_size: 4 } }));
    expect(train.nonRetryable).toBe(true);
    expect(train.message).toContain('lower train.per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch)');
    const pairs = await afterFailure(oom(), await ctx({ stage: 'pairs', params: {} }));
    expect(pairs.nonRetryable).toBe(true);
    expect(pairs.message).toContain('no batch knob: give its worker more memory');
    const shard = await afterFailure(oom(), await ctx({ params: { batch_size: 8, shard: { index: 1, count: 4 } } }));
    expect(shard.nonRetryable).toBe(true);
    expect(shard.message).toContain("(a shard: its batches are the whole stage's plan; sample.batch_size is 8): lower sample.batch_size");
    const one = await afterFailure(oom(), await ctx({ params: { batch_size: 1 } }));
    expect(one.nonRetryable).toBe(true);
    expect(one.message).toContain('(sample.batch_size is 1): lower sample.batch_size');
  });
});

describe('maxFailures', () => {
  it('counts crashes, kills and stalls of this activity and spec; not worker-environment failures, not an earlier run', async () => {
    const a = await ctx({ maxFailures: 2 });
    const crash = (): ApplicationFailure => failed('boom', 1);
    // An earlier run's failure (before a resume) and another spec's are in the same folder: not counted.
    await afterFailure(crash(), { ...a, activity: 'run-old/3', attempt: 7 });
    await afterFailure(crash(), { ...a, specHash: 'h0', attempt: 8 });
    const env = failed('path not visible', 4);
    expect(await afterFailure(env, { ...a, attempt: 1 })).toBe(env);
    expect((await afterFailure(crash(), { ...a, attempt: 2 })).nonRetryable).toBe(false);
    const last = await afterFailure(crash(), { ...a, attempt: 3 });
    expect(last).toMatchObject({ type: 'StageCrashed', nonRetryable: true });
    expect(last.message).toContain("(failed 2 times on live workers, the stage's maxFailures; fix the cause, then resume)");
    expect(JSON.parse(await readFile(path.join(a.outputDir, 'logs', 'attempt-3.failure.json'), 'utf8'))).toMatchObject({ type: 'StageCrashed', specHash: 'h1', activity: 'run-a/3' });
    // Without maxFailures (a plan from before it) nothing becomes final.
    expect((await afterFailure(crash(), { ...a, maxFailures: undefined, attempt: 4 })).nonRetryable).toBe(false);
  });
});
