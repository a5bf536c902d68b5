// Shared test helpers: plans over fixture stages, workers on unique queues, a client.
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { validateConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { projectRoot } from '../src/paths';
import { readRun, writeJsonAtomic, type RunRecord } from '../src/runStore';
import { startWorkers, type QueueRole, type WorkerSet } from '../src/worker';
import type { RunPlan } from '../workflows/types';

export const fixtureScripts = path.join(projectRoot, 'test', 'fixtures', 'stages');
export const settings = () => ({ address: inject('temporalAddress'), namespace: 'default' });

export async function client(): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return { client: new Client({ connection }), close: () => connection.close() };
}

export async function tmpDir(prefix = 'ratioloop-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A valid minimal config (as an object) whose model/prompts are small local files under dir. */
export async function baseConfig(dir: string): Promise<Record<string, unknown>> {
  const model = path.join(dir, 'model');
  await mkdir(model, { recursive: true });
  await writeFile(path.join(model, 'config.json'), '{"tiny": true}\n');
  await writeFile(path.join(dir, 'prompts.jsonl'), '{"id": "p1", "messages": [{"role": "user", "content": "hi"}]}\n');
  return {
    name: 'test',
    seed: 7,
    iterations: 2,
    runsDir: path.join(dir, 'runs'),
    models: { policy: { path: model }, strong: { path: model }, weak: { path: model, template: 'none' }, router: { path: model }, judge: { path: model } },
    prompts: { path: path.join(dir, 'prompts.jsonl') },
  };
}

export function uniqueQueues(): Record<QueueRole, string> {
  const id = randomBytes(4).toString('hex');
  return { control: `t-control-${id}`, cpu: `t-cpu-${id}`, gpu: `t-gpu-${id}` };
}

/** Plan over fixture stages; `fixture` steers each fixture stage (see test/fixtures/stages/fixture_stage.py). */
export async function fixturePlan(dir: string, runId: string, fixture: Record<string, unknown> = {}, raw?: Record<string, unknown>): Promise<RunPlan> {
  const { config, issues } = validateConfig(raw ?? (await baseConfig(dir)));
  if (!config) throw new Error(issues.map((i) => `${i.path}: ${i.message}`).join('\n'));
  const plan = resolvePlan(config, { configPath: path.join(dir, 'config.yaml'), runId });
  for (const s of plan.stages) plan.stagePlans[s].params = { ...plan.stagePlans[s].params, fixture };
  for (const s of plan.stages) plan.stagePlans[s].options = { ...plan.stagePlans[s].options, initialInterval: '200ms', heartbeatTimeout: '30s' };
  plan.queues = uniqueQueues();
  // A run record as `ratioloop run` writes it, so the control activities can update it.
  const now = new Date().toISOString();
  const rec: RunRecord = { runId, createdAt: now, updatedAt: now, status: 'created', configHash: plan.configHash, config, plan, versions: {}, workflowRunIds: [], stages: [] };
  await writeJsonAtomic(path.join(plan.runDir, 'run.json'), rec);
  return plan;
}

export async function fixtureWorkers(plan: RunPlan, roles: QueueRole[] = ['control', 'cpu', 'gpu']): Promise<WorkerSet> {
  return startWorkers({ settings: settings(), roles, queues: plan.queues, stageDeps: { scriptsDir: fixtureScripts, killGraceMs: 2_000 } });
}

export const runRecord = (plan: RunPlan): Promise<RunRecord> => readRun(plan.runDir);
