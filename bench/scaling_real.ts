// Scaling of the REAL sharded sample and score stages (issue 15): the embedded default's programs (scripts/sample.py,
// scripts/score.py) on its model (configs/tiny.yaml: SmolLM2-135M), each gpu worker a process of its own
// (bench/realGpuWorker.ts), control and cpu (the merges) in this process, one private Temporal dev server.
//   npx tsx bench/scaling_real.ts [--prompts 32] [--n 2] [--max-new-tokens 48] [--overhead-shards 4] [--repeats 2] [--no-overhead] [--json]
// On a CPU machine each worker's stage process gets ONE torch thread (RATIOLOOP_THREADS=1), so W workers model W
// devices. Rows: one unsharded activity on one 1-thread worker (the baseline), K = 2 shards over two 1-thread workers,
// and one unsharded activity on one 2-thread worker (the same cores used the ordinary way). Makespan per stage is the
// workflow's own stage duration (schedule → manifest, the merge included); outputs are compared by sha256 with the
// baseline's. Overhead per shard: a small stage (batches of 2) as K shards one after another on one worker vs one
// activity: the same batches either way, so the difference is what each shard adds (scheduling, hashing, the lease,
// Python and torch start-up, model loading, the merge's share). Every configuration runs --repeats times in rotated
// order and the fastest run per stage counts (this shared host's speed moves with its neighbours); every run is printed.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { execa, type ResultPromise } from 'execa';
import { loadConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { startDevServer } from '../src/devServer';
import { pinRunInputs } from '../src/inputPins';
import { projectRoot } from '../src/paths';
import { writeJsonAtomic, type RunRecord } from '../src/runStore';
import { startWorkers } from '../src/worker';
import { uniqueQueues } from '../test/helpers';
import type { alignmentRun } from '../workflows/alignmentRun';
import type { RunProgress } from '../workflows/types';

const { values } = parseArgs({
  options: {
    prompts: { type: 'string', default: '32' },
    n: { type: 'string', default: '2' },
    'max-new-tokens': { type: 'string', default: '48' },
    'overhead-shards': { type: 'string', default: '4' },
    'no-overhead': { type: 'boolean', default: false },
    repeats: { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
  },
});
const PROMPTS = Number(values.prompts);
const N = Number(values.n);
const MAX_NEW = Number(values['max-new-tokens']);
const OVERHEAD_K = Number(values['overhead-shards']);
const REPEATS = Number(values.repeats);
const CONFIG = path.join(projectRoot, 'configs', 'tiny.yaml');
const OUTPUTS = [['sample', 'samples.jsonl'], ['score', 'scores.jsonl'], ['score', 'routes.jsonl']] as const;

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-scaling-real-'));
const server = await startDevServer({ dir: path.join(dir, 'temporal') });
const connection = await Connection.connect({ address: server.address });
const client = new Client({ connection });

/** n real gpu worker processes with `threads` torch threads each, once they poll (wrapped: an async function returning
 *  the subprocess itself would wait for its exit). */
async function gpuWorkers(n: number, queue: string, threads: number): Promise<{ proc: ResultPromise }[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const child = execa('node', ['--import', 'tsx', path.join(projectRoot, 'bench', 'realGpuWorker.ts'), server.address, queue], {
        cwd: projectRoot,
        reject: false,
        env: { RATIOLOOP_THREADS: String(threads) },
      });
      await new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        void child.then((r) => reject(new Error(`gpu worker exited ${r.exitCode}: ${String(r.stderr).slice(-2000)}`)));
      });
      return { proc: child };
    }),
  );
}

interface Sizes {
  prompts: number;
  n: number;
  maxNewTokens: number;
  /** sample and score batch size (tiny.yaml: 8). */
  batch: number;
}

interface Measured {
  label: string;
  workers: number;
  threads: number;
  shards: number;
  sampleS: number;
  scoreS: number;
  totalS: number;
  generatedTokens: number;
  responses: number;
  runDir: string;
  sha256: Record<string, string>;
  /** 1-minute load average when the run started and ended (this bench's own processes included). */
  load: [number, number];
}

const sha256 = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');
const manifestMetrics = async (runDir: string, stage: string) =>
  (JSON.parse(await readFile(path.join(runDir, 'iter-1', stage, 'manifest.json'), 'utf8')) as { metrics: Record<string, unknown> }).metrics;

let runs = 0;
/** One iteration of sample → score of tiny.yaml at `sizes`, `shards` shards each, over `workers` gpu worker processes. */
async function measure(label: string, sizes: Sizes, shards: number, workers: number, threads: number): Promise<Measured> {
  const runId = `real-${++runs}`;
  // As `ratioloop run configs/tiny.yaml` plans it, resized; model paths stay relative to configs/.
  const config = await loadConfig(CONFIG, (raw) => {
    const r = raw as Record<string, Record<string, unknown>>;
    raw.runsDir = path.join(dir, 'runs');
    r.prompts = { ...r.prompts, limit: sizes.prompts };
    r.sample = { ...r.sample, n: sizes.n, max_new_tokens: sizes.maxNewTokens, batch_size: sizes.batch, ...(shards > 1 ? { shards } : {}) };
    r.score = { ...r.score, batch_size: sizes.batch, ...(shards > 1 ? { shards } : {}) };
  });
  const plan = resolvePlan(config, { configPath: CONFIG, runId, iterations: 1 });
  plan.stages = ['sample', 'score'];
  plan.queues = uniqueQueues();
  const now = new Date().toISOString();
  // Pinned before the clock starts, as `ratioloop run` does (and the model's pages are then in the page cache for every row).
  const inputs = await pinRunInputs(plan, undefined);
  const rec: RunRecord = { runId, createdAt: now, updatedAt: now, status: 'created', configPath: CONFIG, configHash: plan.configHash, config, plan, versions: {}, workflowRunIds: [], inputs, stages: [] };
  await writeJsonAtomic(path.join(plan.runDir, 'run.json'), rec);
  process.stderr.write(`run ${runId} (${label}): ${shards} shard(s), ${workers} worker(s) × ${threads} thread(s), load ${os.loadavg()[0]!.toFixed(2)}\n`);

  const local = await startWorkers({ settings: { address: server.address, namespace: 'default' }, roles: ['control', 'cpu'], queues: plan.queues });
  const gpus = await gpuWorkers(workers, plan.queues.gpu, threads);
  const loadAtStart = os.loadavg()[0]!;
  let result: RunProgress;
  const t0 = performance.now();
  try {
    result = await client.workflow.execute<typeof alignmentRun>('alignmentRun', { workflowId: runId, taskQueue: plan.queues.control, args: [plan, { searchAttributes: false }] });
  } finally {
    for (const g of gpus) g.proc.kill('SIGTERM');
    await Promise.allSettled(gpus.map((g) => g.proc));
    await local.shutdown();
  }
  const totalS = (performance.now() - t0) / 1000;
  if (result.status !== 'completed') throw new Error(`run ${runId} ${result.status}: ${result.error ?? ''}`);
  const stageS = (s: string) => (result.stages.find((x) => x.stage === s)?.durationMs ?? NaN) / 1000;
  const sampleMetrics = await manifestMetrics(plan.runDir, 'sample');
  const hashes: Record<string, string> = {};
  for (const [stage, file] of OUTPUTS) hashes[`${stage}/${file}`] = await sha256(path.join(plan.runDir, 'iter-1', stage, file));
  const m: Measured = {
    label,
    workers,
    threads,
    shards,
    sampleS: stageS('sample'),
    scoreS: stageS('score'),
    totalS,
    generatedTokens: Number(sampleMetrics.generated_tokens ?? NaN),
    responses: sizes.prompts * sizes.n,
    runDir: plan.runDir,
    sha256: hashes,
    load: [loadAtStart, os.loadavg()[0]!],
  };
  process.stderr.write(`  sample ${m.sampleS.toFixed(1)} s, score ${m.scoreS.toFixed(1)} s, total ${totalS.toFixed(1)} s, ${m.generatedTokens} tokens\n`);
  return m;
}

const same = (a: Measured, b: Measured) => OUTPUTS.every(([s, f]) => a.sha256[`${s}/${f}`] === b.sha256[`${s}/${f}`]);

/** Leaf by leaf over two parsed JSON values: the largest difference between numbers, and how many other leaves differ. */
function leafDiff(a: unknown, b: unknown, acc = { maxAbs: 0, other: 0 }): { maxAbs: number; other: number } {
  if (typeof a === 'number' && typeof b === 'number') acc.maxAbs = Math.max(acc.maxAbs, Math.abs(a - b));
  else if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) leafDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], acc);
  } else if (a !== b) acc.other++;
  return acc;
}

/** What differs from the baseline, per output file that is not byte-identical (the 2-thread row: reduction order). */
async function differences(r: Measured, base: Measured): Promise<Record<string, { rows: number; rowsDiffering: number; maxAbs: number; otherLeaves: number }>> {
  const out: Record<string, { rows: number; rowsDiffering: number; maxAbs: number; otherLeaves: number }> = {};
  for (const [stage, file] of OUTPUTS) {
    const key = `${stage}/${file}`;
    if (r.sha256[key] === base.sha256[key]) continue;
    const lines = async (m: Measured) => (await readFile(path.join(m.runDir, 'iter-1', stage, file), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown);
    const [a, b] = [await lines(r), await lines(base)];
    const acc = { maxAbs: 0, other: 0 };
    let rowsDiffering = 0;
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (JSON.stringify(a[i]) !== JSON.stringify(b[i])) rowsDiffering++;
      leafDiff(a[i], b[i], acc);
    }
    out[key] = { rows: b.length, rowsDiffering, maxAbs: acc.maxAbs, otherLeaves: acc.other };
  }
  return out;
}

/** Each configuration `repeats` times, the order rotated every round so none always runs first (warm or cold). */
async function rounds(configs: readonly Config[], sizes: Sizes, repeats: number): Promise<Measured[][]> {
  const got: Measured[][] = configs.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let j = 0; j < configs.length; j++) {
      const i = (j + r) % configs.length;
      const c = configs[i]!;
      got[i]!.push(await measure(c.label, sizes, c.shards, c.workers, c.threads));
    }
  }
  return got;
}

interface Config {
  label: string;
  shards: number;
  workers: number;
  threads: number;
}

/** The fastest of a configuration's runs, per stage (this host's rates move with its neighbours' load). */
const fastest = (ms: Measured[]) => ({ sampleS: Math.min(...ms.map((m) => m.sampleS)), scoreS: Math.min(...ms.map((m) => m.scoreS)) });

try {
  const sizes: Sizes = { prompts: PROMPTS, n: N, maxNewTokens: MAX_NEW, batch: 8 };
  const configs: Config[] = [
    { label: 'unsharded, 1 worker × 1 thread', shards: 1, workers: 1, threads: 1 },
    { label: '2 shards, 2 workers × 1 thread', shards: 2, workers: 2, threads: 1 },
    { label: 'unsharded, 1 worker × 2 threads', shards: 1, workers: 1, threads: 2 },
  ];
  const loadBefore = os.loadavg()[0]!;
  const measured = await rounds(configs, sizes, REPEATS);
  const base = measured[0]![0]!;
  const best = measured.map(fastest);
  const b0 = best[0]!;
  const rows = await Promise.all(configs.map(async (c, i) => {
    const runsOf = measured[i]!;
    const { sampleS, scoreS } = best[i]!;
    const diffs = await Promise.all(runsOf.map((m) => differences(m, base)));
    return {
      ...c,
      baseline: i === 0,
      sampleS,
      scoreS,
      sampleSpeedup: b0.sampleS / sampleS,
      scoreSpeedup: b0.scoreS / scoreS,
      bothSpeedup: (b0.sampleS + b0.scoreS) / (sampleS + scoreS),
      generatedTokens: runsOf[0]!.generatedTokens,
      identical: runsOf.every((m) => same(m, base)),
      differences: diffs.find((d) => Object.keys(d).length > 0) ?? {},
      runs: runsOf,
    };
  }));

  let overhead: { sizes: Sizes; shards: number; unsharded: ReturnType<typeof fastest>; sharded: ReturnType<typeof fastest>; perShardSampleS: number; perShardScoreS: number; identical: boolean; runs: Measured[][] } | undefined;
  if (!values['no-overhead']) {
    const small: Sizes = { prompts: 2 * OVERHEAD_K, n: 2, maxNewTokens: 8, batch: 2 };
    const got = await rounds([
      { label: 'overhead: unsharded, 1 worker', shards: 1, workers: 1, threads: 1 },
      { label: `overhead: ${OVERHEAD_K} shards, 1 worker`, shards: OVERHEAD_K, workers: 1, threads: 1 },
    ], small, REPEATS);
    const [one, many] = [fastest(got[0]!), fastest(got[1]!)];
    const ref = got[0]![0]!;
    overhead = {
      sizes: small,
      shards: OVERHEAD_K,
      unsharded: one,
      sharded: many,
      perShardSampleS: (many.sampleS - one.sampleS) / (OVERHEAD_K - 1),
      perShardScoreS: (many.scoreS - one.scoreS) / (OVERHEAD_K - 1),
      identical: got.flat().every((m) => same(m, ref)),
      runs: got,
    };
  }
  const load = { before: loadBefore, after: os.loadavg()[0]!, cores: os.cpus().length };
  const result = { config: 'configs/tiny.yaml', sizes, repeats: REPEATS, rows, overhead, load };
  if (values.json) process.stdout.write(JSON.stringify(result, (k, v: unknown) => (k === 'runDir' ? undefined : v), 2) + '\n'); // run folders are removed at exit
  else {
    const o = process.stdout;
    o.write(`real sample → score (configs/tiny.yaml, SmolLM2-135M): ${sizes.prompts} prompts × N = ${sizes.n}, max_new_tokens ${sizes.maxNewTokens}, batches of ${sizes.batch}; ` +
      `fastest of ${REPEATS} per stage; ${load.cores} cores, load ${load.before.toFixed(2)} → ${load.after.toFixed(2)}\n\n`);
    o.write('| configuration | sample | score | sample + score | speed-up (sample / score / both) | generated tokens | outputs = baseline (sha256) | every run (sample + score, load at start → end) |\n|---|---|---|---|---|---|---|---|\n');
    for (const r of rows) {
      const each = r.runs.map((m) => `${m.sampleS.toFixed(1)} + ${m.scoreS.toFixed(1)} s (${m.load[0].toFixed(1)} → ${m.load[1].toFixed(1)})`).join('; ');
      o.write(`| ${r.label} | ${r.sampleS.toFixed(1)} s | ${r.scoreS.toFixed(1)} s | ${(r.sampleS + r.scoreS).toFixed(1)} s | ${r.sampleSpeedup.toFixed(2)}× / ${r.scoreSpeedup.toFixed(2)}× / ${r.bothSpeedup.toFixed(2)}× | ${r.generatedTokens} | ${r.baseline ? (r.identical ? '(baseline; its runs identical)' : 'baseline runs DIFFER') : r.identical ? 'identical' : 'DIFFERENT'} | ${each} |\n`);
    }
    for (const r of rows) {
      for (const [key, d] of Object.entries(r.differences)) {
        o.write(`\n${r.label}: ${key} differs in ${d.rowsDiffering} of ${d.rows} rows (largest numeric difference ${d.maxAbs.toExponential(2)}, ${d.otherLeaves} other fields differ)`);
      }
    }
    for (const [s, f] of OUTPUTS) o.write(`\nbaseline ${s}/${f}: ${base.sha256[`${s}/${f}`]!.slice(0, 16)}…`);
    o.write('\n');
    if (overhead) {
      const { sizes: sm, unsharded: a, sharded: b } = overhead;
      o.write(`\noverhead per shard (${sm.prompts} prompts × N = ${sm.n}, ${sm.maxNewTokens} new tokens, batches of ${sm.batch}; ${overhead.shards} shards one after another on 1 worker vs 1 activity, fastest of ${REPEATS}): ` +
        `sample ${overhead.perShardSampleS.toFixed(2)} s (${b.sampleS.toFixed(1)} vs ${a.sampleS.toFixed(1)} s), score ${overhead.perShardScoreS.toFixed(2)} s (${b.scoreS.toFixed(1)} vs ${a.scoreS.toFixed(1)} s); outputs ${overhead.identical ? 'identical' : 'DIFFERENT'}\n`);
    }
  }
} finally {
  await connection.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
