// What a failed attempt means for the next one. Out of memory: the batch is halved once (a throughput knob, kept out of
// the spec hash so partial work is kept) or, where halving cannot help or was tried, the stage fails at once naming the
// knob to lower. Crashes, kills and stalls reported by a live worker count against maxFailures, which Temporal's attempt
// count cannot do (it counts preemptions too). Both live in the stage folder: whichever worker runs the next attempt sees them.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { StageName } from '../workflows/types';
import { writeJsonAtomic } from '../src/runStore';

interface OomRule {
  /** params halved on the first out-of-memory failure (none: the stage fails at once). */
  halve: readonly string[];
  /** What to lower when halving is not possible or did not help. */
  advice: string;
}

/** Per stage, what the code supports: sample, score and evaluate resume per item, so a smaller batch loses nothing. */
export const OOM_RULES: Record<StageName, OomRule> = {
  sample: { halve: ['batch_size'], advice: 'lower sample.batch_size (or sample.max_new_tokens / max_prompt_tokens)' },
  score: { halve: ['batch_size', 'max_batch_tokens'], advice: 'lower score.max_batch_tokens and score.batch_size (or score.max_response_tokens)' },
  evaluate: { halve: ['batch_size'], advice: 'lower evaluate.batch_size (or evaluate.max_new_tokens)' },
  // Not halved: the checkpoints' data position and schedule are counted in batches of the configured size.
  train: { halve: [], advice: 'lower train.per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch), lower train.max_length or set train.gradient_checkpointing: true' },
  pairs: { halve: [], advice: 'pairs holds every score and sample in memory and has no batch knob: give its worker more memory' },
};

/** Failures that say the stage program itself went wrong on a live worker; WorkerEnvironment is this host's problem. */
export const COUNTED_FAILURES: ReadonlySet<string> = new Set(['StageCrashed', 'ResourceExhausted', 'StageStalled', 'StageError']);

/** The halved knobs of one spec (spec.json `throughput`; the stage records it in its manifest). */
export interface Throughput {
  specHash: string;
  params: Record<string, number>;
  from: Record<string, number>;
  reason: string;
  attempt: number;
  at: string;
}

const THROUGHPUT_FILE = 'throughput.json';

/** The throughput override for this spec, if an earlier attempt set one (another spec's is ignored). */
export async function throughputFor(outputDir: string, specHash: string): Promise<Throughput | undefined> {
  try {
    const t = JSON.parse(await readFile(path.join(outputDir, THROUGHPUT_FILE), 'utf8')) as Throughput;
    return t.specHash === specHash && t.params && typeof t.params === 'object' ? t : undefined;
  } catch {
    return undefined;
  }
}

export interface AttemptContext {
  stage: StageName;
  outputDir: string;
  specHash: string;
  /** The spec's params (the configured values, before any override). */
  params: Record<string, unknown>;
  attempt: number;
  /** Which activity this attempt belongs to: failures of an earlier run (before a resume) do not count. */
  activity: string;
  maxFailures?: number;
  throughput?: Throughput;
}

/** The failure to report for a failed attempt (toFailure's), made final or changed by these rules. */
export async function afterFailure(f: ApplicationFailure, a: AttemptContext): Promise<ApplicationFailure> {
  if (f.type === 'OutOfMemory') return outOfMemory(f, a);
  if (!f.type || !COUNTED_FAILURES.has(f.type) || f.nonRetryable) return f;
  const count = await recordFailure(a, f.type);
  if (!a.maxFailures || count < a.maxFailures) return f;
  return ApplicationFailure.create({
    message: `${f.message}\n(failed ${count} times on live workers, the stage's maxFailures; fix the cause, then resume)`,
    type: f.type,
    nonRetryable: true,
    details: f.details ? [...f.details] : undefined,
  });
}

async function outOfMemory(f: ApplicationFailure, a: AttemptContext): Promise<ApplicationFailure> {
  const rule = OOM_RULES[a.stage];
  const current = (k: string): unknown => a.throughput?.params[k] ?? a.params[k];
  // A shard runs its range of the whole stage's batch plan (ratioloop_py/shards.py): one shard with other batches would
  // leave prompts out or do them twice.
  const shard = a.params.shard !== undefined && a.params.shard !== null;
  const halvable = shard ? [] : rule.halve.filter((k) => typeof current(k) === 'number' && (current(k) as number) > 1);
  const details = f.details ? [...f.details] : undefined;
  if (!a.throughput && halvable.length) {
    const from = Object.fromEntries(halvable.map((k) => [k, current(k) as number]));
    const params = Object.fromEntries(halvable.map((k) => [k, Math.floor((current(k) as number) / 2)]));
    const t: Throughput = { specHash: a.specHash, params, from, reason: `out of memory in attempt ${a.attempt}`, attempt: a.attempt, at: new Date().toISOString() };
    await writeJsonAtomic(path.join(a.outputDir, THROUGHPUT_FILE), t);
    const change = halvable.map((k) => `${a.stage}.${k} ${from[k]} → ${params[k]}`).join(', ');
    return ApplicationFailure.create({ message: `${f.message}; retrying once with ${change} (partial work is kept; the manifest records it)`, type: 'OutOfMemory', details });
  }
  const now = rule.halve.filter((k) => current(k) !== undefined).map((k) => `${a.stage}.${k} is ${String(current(k))}`).join(', ');
  const why = a.throughput ? ` (already halved once${now ? `: ${now}` : ''})` : shard ? ` (a shard: its batches are the whole stage's plan${now ? `; ${now}` : ''})` : now ? ` (${now})` : '';
  return ApplicationFailure.create({ message: `${f.message}; not retried${why}: ${rule.advice}`, type: 'OutOfMemory', nonRetryable: true, details });
}

/** Write this attempt's failure record and return how many this activity has had (of counted types, this spec). */
async function recordFailure(a: AttemptContext, type: string): Promise<number> {
  const logs = path.join(a.outputDir, 'logs');
  await writeJsonAtomic(path.join(logs, `attempt-${a.attempt}.failure.json`), { attempt: a.attempt, type, specHash: a.specHash, activity: a.activity, at: new Date().toISOString() });
  let n = 0;
  for (const name of await readdir(logs).catch(() => [] as string[])) {
    if (!/^attempt-\d+\.failure\.json$/.test(name)) continue;
    try {
      const r = JSON.parse(await readFile(path.join(logs, name), 'utf8')) as { type?: string; specHash?: string; activity?: string };
      if (r.specHash === a.specHash && r.activity === a.activity && r.type && COUNTED_FAILURES.has(r.type)) n++;
    } catch {
      // a record being replaced or unreadable: not counted
    }
  }
  return n;
}

/** An exit-0 stage whose manifest does not prove its work: a bug in the stage program, never fixed by a retry. */
export function manifestInvalid(stage: string, problem: string): ApplicationFailure {
  return ApplicationFailure.create({ message: `${stage} exited 0 but its manifest is not valid: ${problem} (a bug in the stage program: not retried)`, type: 'ManifestInvalid', nonRetryable: true });
}
