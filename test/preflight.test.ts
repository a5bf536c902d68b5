// Pre-flight on temp folders: each missing path or unset key is named by its config key; official/ratioloop are not paths.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatIssue, validateConfig } from '../src/config/load';
import { preflight } from '../src/config/preflight';
import { baseConfig, tmpDir } from './helpers';

/** The raw config, edited two levels deep (models.strong, score, ...). */
type Raw = Record<string, unknown> & { models: Record<string, unknown> };

async function setup(edit: (raw: Raw, dir: string) => void | Promise<void> = () => undefined, env: NodeJS.ProcessEnv = {}) {
  const dir = await tmpDir('ratioloop-preflight-');
  const raw = (await baseConfig(dir)) as Raw;
  // A model folder as save_pretrained writes it, with the chat template in its own file.
  await writeFile(path.join(dir, 'model', 'chat_template.jinja'), '{% for m in messages %}{{ m.content }}{% endfor %}');
  await edit(raw, dir);
  const { config, issues } = validateConfig(raw);
  if (!config) throw new Error(issues.map(formatIssue).join('\n'));
  const found = await preflight(config, { configPath: path.join(dir, 'config.yaml'), env: { HF_HUB_CACHE: path.join(dir, 'hub'), ...env } });
  return { dir, issues: found.map(formatIssue) };
}

describe('preflight', () => {
  it('passes a config whose paths all exist (built-in guidance and eval data)', async () => {
    expect((await setup()).issues).toEqual([]);
  });

  it('names each missing path with its key, relative paths against the config folder', async () => {
    const { dir, issues } = await setup((raw) => {
      raw.models.strong = { path: 'no-such-model' };
      raw.prompts = { path: 'prompts-typo.jsonl' };
      raw.score = { guidance: { dir: 'guides' } };
      raw.evaluate = { data: 'evalsets' };
    });
    expect(issues).toEqual([
      `models.strong.path: ${path.join(dir, 'no-such-model')} does not exist`,
      `prompts.path: ${path.join(dir, 'prompts-typo.jsonl')} does not exist`,
      `score.guidance.dir: ${path.join(dir, 'guides')} does not exist`,
      `evaluate.data: ${path.join(dir, 'evalsets')} does not exist`,
      `evaluate.arena_hard.questions: not set and the data folder ${path.join(dir, 'evalsets')} has no arena_hard/question.jsonl`,
      `evaluate.alpaca_eval.instructions: not set and the data folder ${path.join(dir, 'evalsets')} has no alpaca_eval/instructions.json`,
      `evaluate.mt_bench.questions: not set and the data folder ${path.join(dir, 'evalsets')} has no mt_bench/question.jsonl`,
    ]);
  });

  it('inspects model folders: config.json, and a chat template only when template is chat', async () => {
    const { dir, issues } = await setup(async (raw, d) => {
      const bare = path.join(d, 'bare');
      await mkdir(bare);
      await writeFile(path.join(bare, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 512 }));
      raw.models.policy = { path: bare };
      raw.models.weak = { path: bare, template: 'none' };
    });
    const bare = path.join(dir, 'bare');
    expect(issues).toEqual([
      `models.policy.path: ${bare} has no config.json (not a Hugging Face model folder)`,
      `models.policy.template: "chat" but the tokenizer in ${bare} has no chat template (tokenizer_config.json chat_template or chat_template.jinja): set template: none or give a Jinja template`,
      `models.weak.path: ${bare} has no config.json (not a Hugging Face model folder)`,
    ]);
  });

  it('finds a chat template in tokenizer_config.json and in a separate tokenizer folder', async () => {
    const { issues } = await setup(async (raw, d) => {
      const m = path.join(d, 'm2');
      await mkdir(m);
      await writeFile(path.join(m, 'config.json'), '{}');
      await writeFile(path.join(m, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{{ messages }}' }));
      const tok = path.join(d, 'tok');
      await mkdir(tok);
      raw.models.policy = { path: m };
      raw.models.strong = { path: m, tokenizer: './tok' };
    });
    expect(issues).toEqual([expect.stringMatching(/^models\.strong\.template: "chat" but the tokenizer in .*tok has no chat template/)]);
  });

  it('a hub id must be in the local Hugging Face cache; a cached snapshot is inspected like a folder', async () => {
    const { issues } = await setup(async (raw, d) => {
      const snap = path.join(d, 'hub', 'models--org--cached', 'snapshots', 'abc123');
      await mkdir(snap, { recursive: true });
      await writeFile(path.join(snap, 'config.json'), '{}');
      await writeFile(path.join(snap, 'chat_template.jinja'), '{{ messages }}');
      raw.models.policy = { hub: 'org/cached' };
      raw.models.strong = { hub: 'org/missing' };
    });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^models\.strong\.hub: org\/missing is not in this host's Hugging Face cache .*--no-preflight/);
  });

  it('endpoints: the api_key_env variable must be set, and its value is never printed', async () => {
    const endpoint = (k: string) => ({ endpoint: { base_url: 'http://judge.local/v1', model: 'j', api_key_env: k } });
    const edit = (raw: Raw) => {
      raw.models.judge = endpoint('RL_JUDGE_KEY');
      raw.evaluate = { mt_bench: { judge: endpoint('RL_MT_KEY') } };
    };
    const unset = await setup(edit);
    expect(unset.issues).toEqual([
      'models.judge.endpoint.api_key_env: the environment variable RL_JUDGE_KEY is not set (it must hold the endpoint\'s API key)',
      'evaluate.mt_bench.judge.endpoint.api_key_env: the environment variable RL_MT_KEY is not set (it must hold the endpoint\'s API key)',
    ]);
    const set = await setup(edit, { RL_JUDGE_KEY: 'sk-secret-value', RL_MT_KEY: 'sk-other' });
    expect(set.issues).toEqual([]);
    expect(JSON.stringify(set.issues)).not.toContain('sk-');
  });

  it('"official" and "ratioloop" are not paths; explicit eval files and cdr_repo (when used) are checked', async () => {
    const { dir, issues } = await setup((raw) => {
      raw.score = { guidance: { source: 'cdr' }, cdr_repo: 'cdr-clone' };
      raw.evaluate = {
        arena_hard: { questions: 'official', baseline_answers: 'official', prompts: 'official' },
        alpaca_eval: { instructions: 'official', gamed: 'gamed.csv', prompts: 'ratioloop' },
        mt_bench: { questions: 'mt.jsonl', reference_answers: 'official', prompts: 'judge_prompts.jsonl' },
      };
    });
    expect(issues).toEqual([
      `score.cdr_repo: ${path.join(dir, 'cdr-clone')} does not exist`,
      `evaluate.alpaca_eval.gamed: ${path.join(dir, 'gamed.csv')} does not exist`,
      `evaluate.mt_bench.questions: ${path.join(dir, 'mt.jsonl')} does not exist`,
      `evaluate.mt_bench.prompts: ${path.join(dir, 'judge_prompts.jsonl')} does not exist`,
    ]);
  });

  it('skips what the run does not use: disabled evaluation, benchmarks left out, a router the field router ignores', async () => {
    const { issues } = await setup((raw) => {
      raw.models.router = { path: 'gone' };
      raw.score = { router: { kind: 'field' }, cdr_repo: 'unused-clone' };
      raw.models.judge = { path: 'gone-too' };
      raw.evaluate = { enabled: false };
    });
    expect(issues).toEqual([]);
    const some = await setup((raw) => {
      raw.evaluate = { benchmarks: ['mt_bench'], arena_hard: { questions: 'missing.jsonl' } };
    });
    expect(some.issues).toEqual([]);
  });
});
