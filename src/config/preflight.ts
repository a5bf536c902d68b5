// Pre-flight: what a valid config names must exist on this host before a run starts, so a mistyped path is a usage
// error (exit 2) here, not a retryable worker failure later. Every problem is reported as "key.path: message".
import { readFile, readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, type ConfigIssue } from './load';
import { BUILTIN_EVAL_DATA } from './resolve';
import type { ModelConfig, RunConfig } from './schema';

export interface PreflightOptions {
  /** The config file: relative paths resolve against its folder, as resolvePlan does. */
  configPath: string;
  env?: NodeJS.ProcessEnv;
}

/** Pre-flight's problems: a ConfigError (exit 2), told apart so the CLI can say how to skip the check. */
export class PreflightError extends ConfigError {
  constructor(file: string, issues: ConfigIssue[]) {
    super(file, issues);
    this.name = 'PreflightError';
  }
}

type Kind = 'file' | 'dir';

async function kindOf(p: string): Promise<Kind | 'other' | undefined> {
  try {
    const s = await stat(p);
    return s.isFile() ? 'file' : s.isDirectory() ? 'dir' : 'other';
  } catch {
    return undefined;
  }
}

/** The issue for a path that must be a `want`, or undefined when it is one. */
async function needPath(key: string, p: string, want: Kind): Promise<ConfigIssue | undefined> {
  const k = await kindOf(p);
  if (k === want) return undefined;
  return { path: key, message: k === undefined ? `${p} does not exist` : `${p} is not a ${want === 'dir' ? 'folder' : 'file'}` };
}

/** This host's Hugging Face hub cache (the folder transformers reads and downloads into). */
function hubCache(env: NodeJS.ProcessEnv): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  return path.join(env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface'), 'hub');
}

/** A snapshot folder of a hub id in the local cache, or undefined. */
async function cachedSnapshot(id: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const snaps = path.join(hubCache(env), `models--${id.replace('/', '--')}`, 'snapshots');
  const names = await readdir(snaps).catch(() => [] as string[]);
  return names.length ? path.join(snaps, names.sort()[0]!) : undefined;
}

/** Whether a tokenizer folder carries a chat template (tokenizer_config.json field, or the separate template files). */
async function hasChatTemplate(dir: string): Promise<boolean> {
  for (const f of ['chat_template.jinja', 'chat_template.json']) if ((await kindOf(path.join(dir, f))) === 'file') return true;
  try {
    const cfg = JSON.parse(await readFile(path.join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template?: unknown };
    return typeof cfg.chat_template === 'string' ? cfg.chat_template.length > 0 : Array.isArray(cfg.chat_template) && cfg.chat_template.length > 0;
  } catch {
    return false;
  }
}

const looksLikePath = (s: string): boolean => /^[.~/]/.test(s);
const expandHome = (s: string): string => (s.startsWith('~/') ? path.join(os.homedir(), s.slice(2)) : s);

async function checkModel(key: string, m: ModelConfig, base: string, env: NodeJS.ProcessEnv): Promise<ConfigIssue[]> {
  if ('endpoint' in m) {
    const v = m.endpoint.api_key_env;
    // Only whether it is set: the value is never read into a message.
    return env[v] ? [] : [{ path: `${key}.endpoint.api_key_env`, message: `the environment variable ${v} is not set (it must hold the endpoint's API key)` }];
  }
  let dir: string | undefined;
  let dirKey: string;
  if (m.path) {
    dirKey = `${key}.path`;
    dir = path.resolve(base, expandHome(m.path));
    const bad = await needPath(dirKey, dir, 'dir');
    if (bad) return [bad];
  } else {
    dirKey = `${key}.hub`;
    dir = await cachedSnapshot(m.hub!, env);
    if (!dir) {
      return [{ path: dirKey, message: `${m.hub} is not in this host's Hugging Face cache (${hubCache(env)}): download it first, or pass --no-preflight when the workers fetch it themselves` }];
    }
  }
  const issues: ConfigIssue[] = [];
  if ((await kindOf(path.join(dir, 'config.json'))) !== 'file') issues.push({ path: dirKey, message: `${dir} has no config.json (not a Hugging Face model folder)` });
  if (m.template === 'chat') {
    let tokDir: string | undefined = dir;
    let tokKey = dirKey;
    if (m.tokenizer) {
      tokKey = `${key}.tokenizer`;
      if (looksLikePath(m.tokenizer)) {
        tokDir = path.resolve(base, expandHome(m.tokenizer));
        const bad = await needPath(tokKey, tokDir, 'dir');
        if (bad) return [...issues, bad];
      } else {
        tokDir = await cachedSnapshot(m.tokenizer, env);
        if (!tokDir) return [...issues, { path: tokKey, message: `${m.tokenizer} is not in this host's Hugging Face cache (${hubCache(env)}): download it first, or pass --no-preflight` }];
      }
    }
    if (!(await hasChatTemplate(tokDir))) {
      issues.push({ path: `${key}.template`, message: `"chat" but the tokenizer in ${tokDir} has no chat template (tokenizer_config.json chat_template or chat_template.jinja): set template: none or give a Jinja template` });
    }
  }
  return issues;
}

/** A config value that is a path unless it is one of the named words (null = not set). */
async function checkValue(key: string, v: string | null | undefined, base: string, want: Kind, words: readonly string[] = ['official']): Promise<ConfigIssue | undefined> {
  if (v === null || v === undefined || words.includes(v)) return undefined;
  return needPath(key, path.resolve(base, expandHome(v)), want);
}

/** Every problem pre-flight finds on this host; [] when the run can start. */
export async function preflight(config: RunConfig, opts: PreflightOptions): Promise<ConfigIssue[]> {
  const env = opts.env ?? process.env;
  const base = path.dirname(path.resolve(opts.configPath));
  const checks: Promise<ConfigIssue[] | ConfigIssue | undefined>[] = [];
  const { models, prompts, score, evaluate } = config;

  checks.push(checkModel('models.policy', models.policy, base, env), checkModel('models.strong', models.strong, base, env), checkModel('models.weak', models.weak, base, env));
  // The router model is used by the llm and label routers only (label falls back to it for unlabelled prompts).
  if (models.router && (score.router.kind === 'llm' || score.router.kind === 'label')) checks.push(checkModel('models.router', models.router, base, env));
  if (evaluate.enabled && models.judge) checks.push(checkModel('models.judge', models.judge, base, env));

  checks.push(checkValue('prompts.path', prompts.path, base, 'file'));
  // A dataset name is a hub id unless it is written as a path; only an absolute one is unambiguous on this host.
  if (prompts.hf && path.isAbsolute(prompts.hf.name)) checks.push(needPath('prompts.hf.name', prompts.hf.name, 'dir'));

  checks.push(checkValue('score.guidance.dir', score.guidance.dir, base, 'dir'));
  const usesCdr = (score.guidance.enabled && score.guidance.source === 'cdr') || score.router.prompt === 'cdr';
  if (usesCdr) checks.push(checkValue('score.cdr_repo', score.cdr_repo, base, 'dir'));

  checks.push(checkValue('evaluate.data', evaluate.data, base, 'dir'));
  if (evaluate.enabled) {
    const data = evaluate.data ? path.resolve(base, expandHome(evaluate.data)) : BUILTIN_EVAL_DATA;
    const on = new Set(evaluate.benchmarks);
    const bench = async (b: 'arena_hard' | 'alpaca_eval' | 'mt_bench', files: [string, string | null, string | null][]): Promise<ConfigIssue[]> => {
      const out: ConfigIssue[] = [];
      for (const [name, v, fallback] of files) {
        const key = `evaluate.${b}.${name}`;
        if (v === null && fallback) {
          // null = the data folder's file; without one the stage would fail after sampling and training.
          if ((await kindOf(path.join(data, fallback))) !== 'file') out.push({ path: key, message: `not set and the data folder ${data} has no ${fallback}` });
        } else {
          const bad = await checkValue(key, v, base, 'file', name === 'prompts' ? ['official', 'ratioloop'] : ['official']);
          if (bad) out.push(bad);
        }
      }
      const cfg = evaluate[b];
      if (cfg.judge) out.push(...(await checkModel(`evaluate.${b}.judge`, cfg.judge, base, env)));
      return out;
    };
    const a = evaluate.arena_hard;
    const al = evaluate.alpaca_eval;
    const mt = evaluate.mt_bench;
    if (on.has('arena_hard')) {
      checks.push(bench('arena_hard', [['questions', a.questions, 'arena_hard/question.jsonl'], ['baseline_answers', a.baseline_answers, null], ['prompts', a.prompts, null]]));
    }
    if (on.has('alpaca_eval')) {
      checks.push(bench('alpaca_eval', [['instructions', al.instructions, 'alpaca_eval/instructions.json'], ['reference_outputs', al.reference_outputs, null], ['instruction_difficulty', al.instruction_difficulty, null], ['gamed', al.gamed, null], ['prompts', al.prompts, null]]));
    }
    if (on.has('mt_bench')) {
      checks.push(bench('mt_bench', [['questions', mt.questions, 'mt_bench/question.jsonl'], ['reference_answers', mt.reference_answers, null], ['prompts', mt.prompts, null]]));
    }
  }
  return (await Promise.all(checks)).flat().filter((i): i is ConfigIssue => i !== undefined);
}
