// Replay tests: every recorded history under test/histories/ must replay against the current workflow code.
// A change to the command sequence that is not behind patched() fails here (see docs/architecture.md, Versioning).
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type ReplayResult } from '@temporalio/worker';
import protoPkg from '@temporalio/proto';
import { projectRoot } from '../src/paths';
import { buildWorkflowBundle } from '../src/workflowBundle';

// @temporalio/proto is CommonJS: its namespace comes through the default export under ESM.
const { temporal } = protoPkg;
Runtime.install({ logger: new DefaultLogger('ERROR') });

const historiesDir = path.join(projectRoot, 'test', 'histories');

async function histories(): Promise<{ workflowId: string; history: protoPkg.temporal.api.history.v1.IHistory; file: string }[]> {
  const files = (await readdir(historiesDir)).filter((f) => f.endsWith('.binpb')).sort();
  return Promise.all(
    files.map(async (f) => {
      const history = temporal.api.history.v1.History.decode(await readFile(path.join(historiesDir, f)));
      return { workflowId: f.replace(/-\d+\.binpb$/, ''), history, file: f };
    }),
  );
}

async function replayAll(code: string): Promise<ReplayResult[]> {
  const out: ReplayResult[] = [];
  const hs = await histories();
  for await (const r of Worker.runReplayHistories({ workflowBundle: { code } }, hs)) out.push(r);
  return out;
}

describe('replay of recorded histories', () => {
  it('has histories for every scenario, from old code and from the current code', async () => {
    const names = (await histories()).map((h) => h.file);
    for (const sc of ['two-iter', 'retry', 'bad-input', 'cancel', 'control', 'cancel-dead-worker', 'sharded', 'sharded-bad-input', 'sharded-evaluate', 'gang', 'gang-retry']) expect(names.filter((n) => n.includes(`-${sc}-`)).length).toBeGreaterThan(0);
  });

  it('replays every history against the current workflow bundle', async () => {
    const { code } = await buildWorkflowBundle();
    const results = await replayAll(code);
    expect(results.length).toBe((await histories()).length);
    expect(results.filter((r) => r.error).map((r) => `${r.workflowId}: ${r.error?.message}`)).toEqual([]);
  });

  it('fails on a nondeterministic change (negative control)', async () => {
    const require = createRequire(import.meta.url);
    const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('./fixtures/workflows/reordered.ts'), logger: new DefaultLogger('WARN') });
    const results = await replayAll(code);
    expect(results.length).toBeGreaterThan(0);
    expect(results.every((r) => r.error?.name === 'DeterminismViolationError')).toBe(true);
  });
});
