// Real processes for end-to-end and fault tests: the CLI and `ratioloop worker` as child processes of the test (so
// kill -9 means kill -9), polling for files, and a run's result from the server.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { Client, Connection } from '@temporalio/client';
import { projectRoot } from '../src/paths';
import type { alignmentRun } from '../workflows/alignmentRun';

export const bin = path.join(projectRoot, 'bin/ratioloop.js');

export const cliEnv = (address: string, extra: Record<string, string> = {}): Record<string, string | undefined> => ({ ...process.env, TEMPORAL_ADDRESS: address, CI: '1', ...extra });

/** Every process started here, so a test file's afterAll can kill what a failed test left running. */
export const children: ResultPromise[] = [];
export async function killChildren(): Promise<void> {
  for (const c of children) c.kill('SIGKILL');
  await Promise.allSettled(children);
}

/** `ratioloop worker --queues Q --config CONFIG [extra args]` with extra environment variables. */
export function worker(address: string, queues: string, config: string, env: Record<string, string> = {}, args: string[] = []): ResultPromise {
  const c = execa('node', [bin, 'worker', '--queues', queues, '--config', config, ...args], { cwd: projectRoot, env: cliEnv(address, env), reject: false, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(c);
  return c;
}

export async function cli(address: string, ...args: string[]) {
  return cliWith(address, {}, ...args);
}

/** The CLI with extra environment variables. */
export async function cliWith(address: string, env: Record<string, string>, ...args: string[]) {
  return execa('node', [bin, ...args], { cwd: projectRoot, env: cliEnv(address, env), reject: false });
}

export async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 180_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** The run's workflow result (follows continue-as-new); rejects when the run failed or was cancelled. */
export async function result(address: string, runId: string) {
  const connection = await Connection.connect({ address });
  try {
    return await new Client({ connection }).workflow.getHandle<typeof alignmentRun>(runId).result();
  } finally {
    await connection.close();
  }
}
