// Live progress end to end, against the real dev server: a stage's first progress line reaches `status` (the function
// behind it) within a few seconds, though the SDK holds heartbeats back for most of the heartbeat timeout.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import type { alignmentRun } from '../workflows/alignmentRun';
import { runStatus } from '../src/client/runs';
import { statusLines } from '../src/progressView';
import { client, fixturePlan, fixtureWorkers, tmpDir } from './helpers';

let c: Client;
let close: () => Promise<void>;
beforeAll(async () => ({ client: c, close } = await client()));
afterAll(async () => close());

describe('live progress', () => {
  it('the first progress line of a stage that then sleeps shows in status within 3 s', async () => {
    const dir = await tmpDir();
    const plan = await fixturePlan(dir, 'live-progress', { sample: { progress_then_sleep_s: 4 } });
    plan.iterations = 1;
    plan.stages = ['sample'];
    const workers = await fixtureWorkers(plan);
    try {
      const h = await c.workflow.start<typeof alignmentRun>('alignmentRun', { workflowId: plan.runId, taskQueue: plan.queues.control, args: [plan] });
      const marker = path.join(plan.runDir, 'iter-1', 'sample', 'progress_at');
      let line: string | undefined;
      let seenAt = 0;
      for (let i = 0; i < 300 && !line; i++) {
        const st = await runStatus(c, path.dirname(plan.runDir), plan.runId);
        if (st.live.some((b) => b.stage === 'sample' && b.done === 1 && b.total === 10)) {
          seenAt = Date.now();
          line = statusLines(st).find((l) => l.includes('sample'));
        } else await new Promise((r) => setTimeout(r, 100));
      }
      const printedAt = Number(await readFile(marker, 'utf8')) * 1000;
      expect(line).toMatch(/sample +1\/10 steps \(10%\)/);
      expect(seenAt - printedAt).toBeLessThan(3_000);
      expect((await h.result()).status).toBe('completed');
    } finally {
      await workers.shutdown();
    }
  });
});
