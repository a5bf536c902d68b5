// Records the replay-test histories from real runs of the fixture stages (not a test: run it by hand after a
// deliberate, patched() change to the workflow, to add histories made by the new code):
//   npx tsx test/histories/record.ts LABEL [SCENARIO...]   → test/histories/LABEL-<scenario>-<execution>.binpb
// Each file is one workflow execution (temporal.api.history.v1.History, binary protobuf); a continued-as-new run gives one file per
// execution. Old files are kept: they are what proves new code still replays runs that old code started.
import { stat, writeFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import protoPkg from '@temporalio/proto';
import { startDevServer } from '../../src/devServer';
import { startWorkers } from '../../src/worker';
import type { RunPlan, StageActivityOptions } from '../../workflows/types';
import type { QueueRole } from '../../src/worker';
import { startDeadStageWorker } from '../deadWorker';
import { fixturePlan, fixtureScripts } from '../helpers';
import { controlRun } from '../../src/client/runs';
import { readRun } from '../../src/runStore';

// @temporalio/proto is CommonJS: its namespace comes through the default export under ESM.
const { temporal } = protoPkg;

const [label, ...only] = process.argv.slice(2);
if (!label || !/^[a-z0-9-]+$/.test(label)) {
  process.stderr.write('usage: npx tsx test/histories/record.ts LABEL (lowercase letters, digits, -)\n');
  process.exit(2);
}
const outDir = path.dirname(new URL(import.meta.url).pathname);

interface Scenario {
  name: string;
  fixture: Record<string, unknown>;
  iterations: number;
  /** Runs against the started workflow (e.g. cancel it); the recorder then waits for it to close. */
  drive?: (plan: RunPlan, client: Client, address: string) => Promise<void>;
  /** Queues the recorder's own workers serve (default: all three). */
  roles?: QueueRole[];
  /** Stage options changed for the scenario (e.g. a short heartbeat timeout). */
  options?: Partial<StageActivityOptions>;
  /** Other plan changes (e.g. sharded stages). */
  plan?: (plan: RunPlan) => void;
  /** Extra gpu workers, one per named host, each also polling its host queue (a gang's machines). */
  hosts?: string[];
}

async function waitFor(file: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await stat(file).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${file}`);
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-record-'));
const flag = path.join(dir, 'input-is-bad');
const scenarios: Scenario[] = [
  { name: 'two-iter', fixture: {}, iterations: 2 },
  { name: 'retry', fixture: { score: { fail_attempts: 1 } }, iterations: 1 },
  { name: 'bad-input', fixture: { pairs: { bad_input: 'scores.jsonl:3: rewards must be a list', bad_input_while: flag } }, iterations: 2 },
  {
    name: 'cancel',
    fixture: { sample: { sleep_s: 120, spawn_child: true } },
    iterations: 2,
    drive: async (plan, client) => {
      await waitFor(path.join(plan.runDir, 'iter-1/sample/child.pid'));
      await client.workflow.getHandle(plan.runId).cancel();
    },
  },
];

async function stageStatus(plan: RunPlan, k: number, stage: string, status: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await readRun(plan.runDir)).stages.some((s) => s.iteration === k && s.stage === stage && s.status === status)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for iteration ${k} ${stage} ${status}`);
}

scenarios.push({
  // A cancel while the stage's worker is dead: the heartbeat timeout ends the activity; the run ends cancelled (patch
  // ratioloop-cancel-requested-v1).
  name: 'cancel-dead-worker',
  fixture: {},
  iterations: 1,
  roles: ['control', 'cpu'],
  options: { heartbeatTimeout: '2s' },
  drive: async (plan, client, address) => {
    const dead = await startDeadStageWorker(address, plan.queues.gpu);
    try {
      await dead.taken;
      await client.workflow.getHandle(plan.runId).cancel();
      await client.workflow.getHandle(plan.runId).result().catch(() => undefined);
    } finally {
      await dead.shutdown();
    }
  },
});

scenarios.push({
  // Every control verb: pause across a boundary, more iterations, a skipped stage, unpause, stop after iteration 2.
  name: 'control',
  fixture: { sample: { sleep_s: 3 } },
  iterations: 1,
  drive: async (plan, client) => {
    const runsDir = path.dirname(plan.runDir);
    await stageStatus(plan, 1, 'sample', 'running');
    await controlRun(client, runsDir, plan.runId, 'pause', []);
    await stageStatus(plan, 1, 'sample', 'done');
    await controlRun(client, runsDir, plan.runId, 'set-iterations', ['3']);
    await controlRun(client, runsDir, plan.runId, 'skip-stage', ['1', 'evaluate']);
    await controlRun(client, runsDir, plan.runId, 'unpause', []);
    await stageStatus(plan, 2, 'sample', 'running');
    await controlRun(client, runsDir, plan.runId, 'stop-after-iteration', []);
  },
});

scenarios.push({
  // Sharded stages (patch ratioloop-sharded-stages-v3): sample as 3 shards and a merge, score `auto` (the control
  // queue's planShards: one gpu worker polls, so one activity).
  name: 'sharded',
  fixture: { sample: { sharded: true, prompts: 12, batch: 4 }, score: { sharded: true, prompts: 12, batch: 4 } },
  iterations: 1,
  plan: (plan) => {
    plan.stagePlans.sample.shards = 3;
    plan.stagePlans.score.shards = 'auto';
  },
});
scenarios.push({
  // A shard that fails for good cancels its sibling shards (waited for) and fails the run.
  name: 'sharded-bad-input',
  fixture: { sample: { sharded: true, prompts: 12, batch: 4, per_prompt_s: 0.2, bad_input_shard: 1 } },
  iterations: 1,
  plan: (plan) => {
    plan.stagePlans.sample.shards = 3;
  },
});
scenarios.push({
  // Sharded evaluate (same patch): 2 answer shards on the gpu queue, then the judging merge on the evaluate queue.
  name: 'sharded-evaluate',
  fixture: { evaluate: { sharded: true, prompts: 12, batch: 4 } },
  iterations: 1,
  plan: (plan) => {
    plan.stagePlans.evaluate.shards = 2;
  },
});

// Multi-node training as a gang (patch ratioloop-gang-training-v1): train on 2 machines, one rank on each host's queue.
const onTwoMachines = (plan: RunPlan): void => {
  const p = plan.stagePlans.train.params;
  plan.stagePlans.train.params = { ...p, launch: { ...(p.launch as Record<string, unknown>), num_machines: 2, num_processes: 2 } };
};
scenarios.push({ name: 'gang', fixture: {}, iterations: 1, roles: ['control', 'cpu'], hosts: ['host-a', 'host-b'], plan: onTwoMachines });
// Both ranks fail in the gang's first attempt: the gang is cancelled and claimed again, and its second attempt succeeds.
scenarios.push({ name: 'gang-retry', fixture: { train: { fail_attempts: 1 } }, iterations: 1, roles: ['control', 'cpu'], hosts: ['host-a', 'host-b'], plan: onTwoMachines });

const server = await startDevServer({ dir: path.join(dir, 'temporal') });
const connection = await Connection.connect({ address: server.address });
const client = new Client({ connection });
try {
  await writeFile(flag, 'x');
  for (const sc of scenarios.filter((x) => only.length === 0 || only.includes(x.name))) {
    const runId = `${label}-${sc.name}`;
    const plan = await fixturePlan(path.join(dir, sc.name), runId, sc.fixture);
    plan.iterations = sc.iterations;
    for (const s of plan.stages) plan.stagePlans[s].options = { ...plan.stagePlans[s].options, ...sc.options };
    sc.plan?.(plan);
    const settings = { address: server.address, namespace: 'default' };
    const workers = await startWorkers({ settings, roles: sc.roles ?? ['control', 'cpu', 'gpu'], queues: plan.queues, stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } });
    const hosts = await Promise.all((sc.hosts ?? []).map((hostname) => startWorkers({ settings, roles: ['gpu'], queues: plan.queues, hostQueue: true, hostname, stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } })));
    try {
      const h = await client.workflow.start('alignmentRun', { workflowId: runId, taskQueue: plan.queues.control, args: [plan] });
      await sc.drive?.(plan, client, server.address);
      await h.result().catch(() => undefined);
    } finally {
      await Promise.all([workers, ...hosts].map((w) => w.shutdown()));
    }
    // Follow the chain of executions from the first one.
    let runIdOfExecution: string | undefined = (await client.workflow.getHandle(runId).describe()).raw.workflowExecutionInfo?.firstRunId ?? undefined;
    for (let n = 1; runIdOfExecution; n++) {
      const history = await client.workflow.getHandle(runId, runIdOfExecution).fetchHistory();
      // Binary protobuf: the SDK's JSON history reader is broken by the nested protobufjs copies npm installs.
      const file = path.join(outDir, `${label}-${sc.name}-${n}.binpb`);
      await writeFile(file, temporal.api.history.v1.History.encode(history).finish());
      process.stdout.write(`${file}: ${history.events?.length ?? 0} events\n`);
      const last = history.events?.[history.events.length - 1];
      runIdOfExecution = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
    }
  }
} finally {
  await connection.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
