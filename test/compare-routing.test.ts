// `ratioloop compare` and the report show, per routed domain, how many prompts the score stage routed there and how
// many of those were guided (score manifest metrics router.<DOMAIN> and guided.<DOMAIN>).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { compareRuns, renderCompareTable } from '../src/client/compare';
import { renderHtmlReport } from '../src/client/report';
import { writeJsonAtomic } from '../src/runStore';

const score = { 'router.CHAT': 4, 'router.SAFETY': 4, 'router.REASONING': 4, 'guided.CHAT': 0, 'guided.SAFETY': 4, 'guided.REASONING': 3, guided_prompts: 7, 'route_how.label': 12 };

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rl-compare-routing-'));
  const stages = [{ stage: 'score', iteration: 1, status: 'completed', durationMs: 1000, metrics: score }];
  await writeJsonAtomic(path.join(dir, 'r1', 'run.json'), { runId: 'r1', status: 'completed', plan: { iterations: 1, stages: ['score'] }, stages });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('shows prompts and guided prompts per routed domain', async () => {
  const cmp = await compareRuns(dir, ['r1']);
  expect(cmp.rows[0]!.routedByDomain).toEqual({ CHAT: { prompts: 4, guided: 0 }, SAFETY: { prompts: 4, guided: 4 }, REASONING: { prompts: 4, guided: 3 } });
  const [header, , row] = renderCompareTable(cmp).split('\n');
  const cols = header!.split(/\s{2,}/);
  const cells = row!.split(/\s{2,}/);
  expect(cells[cols.indexOf('SAFETY (guided)')]).toBe('4 (4)');
  expect(cells[cols.indexOf('REASONING (guided)')]).toBe('4 (3)');
  expect(cells[cols.indexOf('CHAT (guided)')]).toBe('4 (0)');
  expect(renderHtmlReport(cmp)).toContain('SAFETY (guided)');
});
