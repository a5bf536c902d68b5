// One real Temporal dev server (from the venv) for the whole test run, on a throwaway SQLite file.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startDevServer, type DevServer } from '../src/devServer';

let server: DevServer | undefined;
let dir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-test-temporal-'));
  server = await startDevServer({ dir });
  project.provide('temporalAddress', server.address);
  project.provide('temporalStateDir', dir);
}

export async function teardown(): Promise<void> {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalStateDir: string;
  }
}
