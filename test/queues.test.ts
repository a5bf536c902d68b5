// Queue names (prefixed per user or project, explicit names kept), the stage → queue map, and resource classes.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatIssue, loadConfig, validateConfig } from '../src/config/load';
import { resolvePlan, runQueues } from '../src/config/resolve';
import { projectRoot } from '../src/paths';
import { classesUpTo, defaultQueuePrefix, gpuQueueFor, queueNames, stageGpus } from '../src/queues';

const good = (extra: Record<string, unknown> = {}) => ({
  models: { policy: { path: 'm' }, strong: { path: 'm' }, weak: { path: 'm', template: 'none' }, router: { path: 'm' }, judge: { path: 'm' } },
  prompts: { path: 'p.jsonl' },
  ...extra,
});
const config = (extra: Record<string, unknown> = {}) => {
  const { config: c, issues } = validateConfig(good(extra));
  if (!c) throw new Error(issues.map(formatIssue).join('\n'));
  return c;
};
const problems = (extra: Record<string, unknown>): string[] => validateConfig(good(extra)).issues.map(formatIssue);

describe('queue names', () => {
  it('default to ratioloop-<user>-…, or $RATIOLOOP_QUEUE_PREFIX', () => {
    expect(defaultQueuePrefix({ USER: 'ada' })).toBe('ratioloop-ada');
    expect(defaultQueuePrefix({ USER: 'Dr. Who@lab' })).toBe('ratioloop-Dr.-Who-lab'); // only queue-name characters
    expect(defaultQueuePrefix({ USER: 'ada', RATIOLOOP_QUEUE_PREFIX: 'team-x' })).toBe('team-x');
    expect(() => defaultQueuePrefix({ RATIOLOOP_QUEUE_PREFIX: 'bad prefix' })).toThrow('RATIOLOOP_QUEUE_PREFIX "bad prefix"');
    expect(queueNames({ env: { USER: 'ada' } })).toEqual({ control: 'ratioloop-ada-control', cpu: 'ratioloop-ada-cpu', gpu: 'ratioloop-ada-gpu' });
  });

  it('a config prefix names the project; explicit taskQueues names win; classes hang off the gpu name', () => {
    const env = { USER: 'ada' };
    expect(runQueues(config({ queues: { prefix: 'llama3' } }), env)).toEqual({ control: 'llama3-control', cpu: 'llama3-cpu', gpu: 'llama3-gpu' });
    // Existing configs with full names keep them (and the old shared names by writing them out).
    expect(runQueues(config({ taskQueues: { gpu: 'ratioloop-gpu' } }), env)).toEqual({ control: 'ratioloop-ada-control', cpu: 'ratioloop-ada-cpu', gpu: 'ratioloop-gpu' });
    const q = runQueues(config({ taskQueues: { gpu: 'big-gpu' }, train: { launch: { num_processes: 8 } } }), env);
    expect(q['gpu-x8']).toBe('big-gpu-x8');
  });
});

describe('resource classes', () => {
  it('k GPUs on one machine → gpu (k ≤ 1) or the smallest power-of-two class holding k', () => {
    expect([0, 1, 2, 3, 4, 5, 8, 9].map(gpuQueueFor)).toEqual(['gpu', 'gpu', 'gpu-x2', 'gpu-x4', 'gpu-x4', 'gpu-x8', 'gpu-x8', 'gpu-x16']);
    expect(classesUpTo(1)).toEqual([]);
    expect(classesUpTo(6)).toEqual(['gpu-x2', 'gpu-x4']);
    expect(classesUpTo(8)).toEqual(['gpu-x2', 'gpu-x4', 'gpu-x8']);
  });

  it('a stage needs the GPUs its params ask for on its machine', () => {
    expect(stageGpus('sample', { num_processes: 2, tensor_parallel_size: 2, backend: 'vllm' })).toBe(4);
    expect(stageGpus('sample', { num_processes: 2, tensor_parallel_size: 2, backend: 'hf' })).toBe(2); // hf ignores tp
    expect(stageGpus('score', { num_processes: 4 })).toBe(4);
    expect(stageGpus('train', { launch: { num_processes: 16, num_machines: 2 } })).toBe(8); // the total over machines
    expect(stageGpus('evaluate', {})).toBe(1);
    expect(stageGpus('pairs', {})).toBe(0);
  });

  it('the plan routes a k-GPU stage to its class queue and names only the classes it uses', () => {
    const c = config({ queues: { prefix: 'p' }, train: { launch: { num_processes: 8 } }, score: { num_processes: 2 } });
    const plan = resolvePlan(c, { configPath: '/x/config.yaml', runId: 'r1' });
    expect(plan.stagePlans.train.queue).toBe('gpu-x8');
    expect(plan.stagePlans.score.queue).toBe('gpu-x2');
    expect(plan.stagePlans.sample.queue).toBe('gpu');
    expect(plan.queues).toEqual({ control: 'p-control', cpu: 'p-cpu', gpu: 'p-gpu', 'gpu-x2': 'p-gpu-x2', 'gpu-x8': 'p-gpu-x8' });
  });

  it('queues.stages moves a stage between cpu and gpu; a cpu stage has no class', () => {
    const c = config({ queues: { prefix: 'p', stages: { pairs: 'gpu', score: 'cpu' } }, score: { num_processes: 2 } });
    const plan = resolvePlan(c, { configPath: '/x/config.yaml', runId: 'r1' });
    expect(plan.stagePlans.pairs.queue).toBe('gpu');
    expect(plan.stagePlans.score.queue).toBe('cpu');
    expect(Object.keys(plan.queues)).toEqual(['control', 'cpu', 'gpu']);
  });

  it('the paper recipe trains on the 8-GPU class', async () => {
    const file = path.join(projectRoot, 'configs/llama3-8b-gdr-simpo.yaml');
    const plan = resolvePlan(await loadConfig(file), { configPath: file, runId: 'x1' });
    expect(plan.stagePlans.train.queue).toBe('gpu-x8');
    expect(plan.queues['gpu-x8']).toBe(`${plan.queues.gpu}-x8`);
  });
});

describe('queue config validation', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['a stage queue that is not cpu or gpu', { queues: { stages: { train: 'tpu' } } }, 'queues.stages.train:'],
    ['an unknown stage', { queues: { stages: { smaple: 'gpu' } } }, 'queues.stages.smaple: unknown key'],
    ['a prefix with a space', { queues: { prefix: 'my project' } }, 'queues.prefix:'],
    ['more GPUs on one machine than any class', { train: { launch: { num_processes: 128 } } }, 'train.launch.num_processes: needs 128 GPUs on one machine'],
  ];
  for (const [name, extra, expected] of cases) {
    it(`reports ${name}`, () => {
      const p = problems(extra);
      expect(p.some((m) => m.startsWith(expected)), `got: ${p.join(' | ')}`).toBe(true);
    });
  }
  it('many GPUs are fine on a cpu-mapped stage (ranks share the CPU)', () => {
    expect(problems({ queues: { stages: { train: 'cpu' } }, train: { launch: { num_processes: 128 } } })).toEqual([]);
  });
});
