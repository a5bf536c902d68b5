// Config validation: every problem reported with its dotted key path; run ids; JSON Schema; the shipped configs.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, validateConfig, formatIssue, ConfigError } from '../src/config/load';
import { configJsonSchema } from '../src/config/jsonSchema';
import { resolvePlan } from '../src/config/resolve';
import { projectRoot } from '../src/paths';
import { validateRunId } from '../src/runStore';

const good = () => ({
  models: { policy: { path: 'm' }, strong: { path: 'm' }, weak: { path: 'm', template: 'none' }, router: { path: 'm' }, judge: { path: 'm' } },
  prompts: { path: 'p.jsonl' },
});

type Raw = ReturnType<typeof good> & Record<string, unknown>;
const problems = (mutate: (c: Raw) => void): string[] => {
  const c = good() as Raw;
  mutate(c);
  return validateConfig(c).issues.map(formatIssue);
};

describe('config validation', () => {
  it('accepts a minimal config and fills defaults', () => {
    const { config, issues } = validateConfig(good());
    expect(issues).toEqual([]);
    expect(config?.train.beta).toBe(2);
    expect(config?.sample.n).toBe(4);
    expect(config?.taskQueues.gpu).toBeUndefined(); // named from queues.prefix at plan time (src/queues.ts)
  });

  const cases: [string, (c: Raw) => void, string][] = [
    ['negative beta', (c) => (c.train = { beta: -1 }), 'train.beta:'],
    ['unknown top-level key', (c) => (c.iteratons = 2), 'iteratons: unknown key'],
    ['unknown nested key', (c) => (c.sample = { temprature: 0.7 }), 'sample.temprature: unknown key'],
    ['wrong type', (c) => (c.iterations = 'two'), 'iterations:'],
    ['bad enum', (c) => (c.score = { reward: 'median' }), 'score.reward:'],
    ['model with both path and hub', (c) => (c.models.strong = { path: 'a', hub: 'org/x' } as never), 'models.strong:'],
    ['missing policy', (c) => delete (c.models as Partial<Raw['models']>).policy, 'models.policy:'],
    ['bad duration', (c) => (c.timeouts = { train: { startToClose: 'forever' } }), 'timeouts.train.startToClose:'],
    ['prompt_length ≥ max_length', (c) => (c.train = { max_length: 128, max_prompt_length: 256 }), 'train.max_prompt_length: must be below train.max_length'],
    ['seeds count ≠ n', (c) => (c.sample = { n: 3, seeds: [1, 2] }), 'sample.seeds:'],
    ['router kind typo', (c) => (c.score = { router: { kind: 'llmm' } }), 'score.router.kind:'],
    ['multi-node processes not split evenly', (c) => (c.train = { launch: { num_machines: 2, num_processes: 3 } }), 'train.launch.num_processes: is the total'],
    ['endpoint with a bad env var name', (c) => (c.models.judge = { endpoint: { base_url: 'https://api.example.com/v1', model: 'gpt-4', api_key_env: 'my key' } } as never), 'models.judge.endpoint.api_key_env:'],
    ['bad task queue name', (c) => (c.taskQueues = { gpu: 'gpu queue!' }), 'taskQueues.gpu:'],
    ['top_p zero', (c) => (c.sample = { top_p: 0 }), 'sample.top_p:'],
  ];
  for (const [name, mutate, expected] of cases) {
    it(`reports ${name} at its key path`, () => {
      const p = problems(mutate);
      expect(p.some((m) => m.startsWith(expected)), `got: ${p.join(' | ')}`).toBe(true);
    });
  }

  it('lists every problem, not just the first', () => {
    const p = problems((c) => {
      c.train = { beta: -1 };
      c.sample = { n: 0 };
      c.bogus = true;
    });
    expect(new Set(p.map((m) => m.split(':')[0]))).toEqual(new Set(['train.beta', 'sample.n', 'bogus']));
  });

  it('names the YAML file and the key in a ConfigError', async () => {
    const err = await loadConfig(path.join(projectRoot, 'test/fixtures/configs/bad-beta.yaml')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain('train.beta');
  });

  it('shipped configs validate and resolve to a plan', async () => {
    for (const f of ['configs/tiny.yaml']) {
      const file = path.join(projectRoot, f);
      const config = await loadConfig(file);
      const plan = resolvePlan(config, { configPath: file, runId: 'x1' });
      expect(plan.stages).toContain('train');
      expect(plan.stagePlans.train.queue).toBe('gpu');
      expect(plan.stagePlans.pairs.queue).toBe('cpu');
      expect(path.isAbsolute(plan.staticInputs.prompts!.path)).toBe(true);
    }
  });

  it('evaluate: official limits by default; per-benchmark prompts and judges resolve against the config folder', () => {
    const c = good() as Raw;
    c.evaluate = {
      arena_hard: { prompts: 'prompts/judge_config.yaml', judge: { path: 'judges/big' } },
      alpaca_eval: { prompts: 'official' },
      mt_bench: { judge: { endpoint: { base_url: 'https://api.example.com/v1', model: 'gpt-4', api_key_env: 'K' } } },
    };
    const { config, issues } = validateConfig(c);
    expect(issues).toEqual([]);
    expect(config!.evaluate.max_new_tokens).toBeNull();
    const ev = resolvePlan(config!, { configPath: '/cfg/run.yaml', runId: 'x2' }).stagePlans.evaluate.params as Record<string, Record<string, unknown>>;
    expect(ev.arena_hard!.prompts).toBe(path.resolve('/cfg', 'prompts/judge_config.yaml'));
    expect(ev.arena_hard!.judge).toMatchObject({ path: path.resolve('/cfg', 'judges/big') });
    expect(ev.alpaca_eval!.prompts).toBe('official');
    expect(ev.mt_bench!.prompts).toBe('ratioloop');
    expect((ev.mt_bench!.judge as { endpoint: { model: string } }).endpoint.model).toBe('gpt-4');
    expect(problems((r) => (r.evaluate = { max_new_tokens: { arena_hard: 0 } }))[0]).toMatch(/^evaluate\.max_new_tokens/);
  });

  it('exports a JSON Schema that rejects unknown keys', () => {
    const schema = configJsonSchema() as { properties: Record<string, unknown>; additionalProperties?: unknown };
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(['models', 'sample', 'score', 'pairs', 'train', 'evaluate']));
    expect(schema.additionalProperties).toBe(false);
  });
});

describe('run ids', () => {
  it.each(['../etc', 'a/b', '..', '.hidden', '', 'x'.repeat(65), 'a..b'])('rejects %j', (id) => {
    expect(() => validateRunId(id)).toThrow(/invalid run id/);
  });
  it.each(['tiny-20261127-ab12', 'run.1', 'A_b-c'])('accepts %j', (id) => {
    expect(validateRunId(id)).toBe(id);
  });
});

describe('docs/configuration.md', () => {
  it('is the current schema (regenerate with npm run docs:config)', async () => {
    const { readFile } = await import('node:fs/promises');
    const { configReferenceMarkdown } = await import('../src/config/reference');
    expect(await readFile(path.join(projectRoot, 'docs/configuration.md'), 'utf8')).toBe(configReferenceMarkdown());
  });
});
