// Scaling of a sharded stage over a pool of gpu workers (issue 15): fixture sample stages of known cost (sleep per
// prompt, test/fixtures/stages/shard_fixture.py), each gpu worker a process of its own (test/fixtures/gpuWorker.ts),
// control and cpu (the merge) in this process, one private Temporal dev server.
//   npx tsx bench/scaling.ts [--prompts 64] [--per-prompt-s 0.25] [--workers 1,2,4] [--json]
// Prints the makespan of the stage (workflow start → result) with K = W shards over W workers against one unsharded
// activity on one worker, the speed-up, and the orchestration overhead per shard: the extra makespan of each shard
// beyond the first when shards of no work run one after another on one worker.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { execa, type ResultPromise } from 'execa';
import { startDevServer } from '../src/devServer';
import { projectRoot } from '../src/paths';
import { startWorkers } from '../src/worker';
import { fixturePlan, fixtureScripts } from '../test/helpers';
import type { RunPlan } from '../workflows/types';

const { values } = parseArgs({
  options: { prompts: { type: 'string', default: '64' }, 'per-prompt-s': { type: 'string', default: '0.25' }, workers: { type: 'string', default: '1,2,4' }, json: { type: 'boolean', default: false } },
});
const prompts = Number(values.prompts);
const perPrompt = Number(values['per-prompt-s']);
const pools = String(values.workers).split(',').map(Number);
const BATCH = 4;

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-scaling-'));
const server = await startDevServer({ dir: path.join(dir, 'temporal') });
const connection = await Connection.connect({ address: server.address });
const client = new Client({ connection });

/** n gpu worker processes, once they poll (wrapped: an async function returning the subprocess would wait for its exit). */
async function gpuWorkers(n: number, queue: string): Promise<{ proc: ResultPromise }[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const child = execa('node', ['--import', 'tsx', path.join(projectRoot, 'test', 'fixtures', 'gpuWorker.ts'), server.address, queue], { cwd: projectRoot, reject: false });
      await new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        void child.then((r) => reject(new Error(`gpu worker exited ${r.exitCode}: ${String(r.stderr).slice(-2000)}`)));
      });
      return { proc: child };
    }),
  );
}

let runs = 0;
/** Makespan (s) of one sample stage with `shards` shards of `perPromptS` per prompt over `workers` gpu worker processes. */
async function makespan(shards: number, workers: number, perPromptS: number): Promise<number> {
  const runId = `scaling-${++runs}`;
  const fx = { sample: { sharded: true, prompts, batch: BATCH, per_prompt_s: perPromptS } };
  const plan: RunPlan = await fixturePlan(path.join(dir, runId), runId, fx);
  plan.stages = ['sample'];
  plan.iterations = 1;
  if (shards > 1) plan.stagePlans.sample.shards = shards;
  process.stderr.write(`run ${runId}: ${shards} shards, ${workers} workers\n`);
  const local = await startWorkers({ settings: { address: server.address, namespace: 'default' }, roles: ['control', 'cpu'], queues: plan.queues, stageDeps: { scriptsDir: fixtureScripts } });
  const gpus = await gpuWorkers(workers, plan.queues.gpu);
  try {
    const t0 = performance.now();
    await client.workflow.execute('alignmentRun', { workflowId: runId, taskQueue: plan.queues.control, args: [plan, { searchAttributes: false }] });
    return (performance.now() - t0) / 1000;
  } finally {
    for (const g of gpus) g.proc.kill('SIGTERM');
    await Promise.allSettled(gpus.map((g) => g.proc));
    await local.shutdown();
  }
}

try {
  const work = (Math.ceil(prompts / BATCH) * BATCH * perPrompt);
  const base = await makespan(1, 1, perPrompt);
  const rows: { workers: number; shards: number; makespanS: number; speedup: number; ofIdeal: number }[] = [{ workers: 1, shards: 1, makespanS: base, speedup: 1, ofIdeal: 1 }];
  for (const w of pools.filter((x) => x > 1)) {
    const t = await makespan(w, w, perPrompt);
    rows.push({ workers: w, shards: w, makespanS: t, speedup: base / t, ofIdeal: base / t / w });
  }
  // Overhead per shard: shards of no work, one after another on one worker (8 shards vs 1 activity).
  const K = 8;
  const empty1 = await makespan(1, 1, 0);
  const emptyK = await makespan(K, 1, 0);
  const perShard = (emptyK - empty1) / (K - 1);
  const result = { prompts, perPromptS: perPrompt, workS: work, rows, overhead: { unshardedEmptyS: empty1, shardedEmptyS: emptyK, shards: K, perShardS: perShard } };
  if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else {
    process.stdout.write(`sample stage: ${prompts} prompts × ${perPrompt} s = ${work.toFixed(1)} s of work, batches of ${BATCH}\n\n`);
    process.stdout.write('| gpu workers | shards | makespan | speed-up | of ideal |\n|---|---|---|---|---|\n');
    for (const r of rows) process.stdout.write(`| ${r.workers} | ${r.shards} | ${r.makespanS.toFixed(2)} s | ${r.speedup.toFixed(2)}× | ${(100 * r.ofIdeal).toFixed(0)} % |\n`);
    process.stdout.write(`\noverhead per shard: ${perShard.toFixed(2)} s (${K} empty shards on one worker ${emptyK.toFixed(2)} s vs one empty activity ${empty1.toFixed(2)} s)\n`);
  }
} finally {
  await connection.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
