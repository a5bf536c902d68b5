// `ratioloop compare` and the HTML report: a score from a judge the evaluate stage flagged as uninformative is shown
// as "uninformative judge", never as a number.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRuns, evalScores, renderCompareTable, UNINFORMATIVE } from '../src/client/compare';
import { renderHtmlReport } from '../src/client/report';
import { writeJsonAtomic } from '../src/runStore';

// Iteration 1: the biased judge (always A>>B) gave ArenaHard exactly 50 with an interval; iteration 2: a real one.
const biased = { 'arena_hard.score': 50, 'arena_hard.ci_low': 41.2, 'arena_hard.ci_high': 58.8, 'arena_hard.judge_informative': 0, 'arena_hard.position_consistency': 0, 'mt_bench.score': 5.5, 'mt_bench.judge_informative': 1 };
const real = { 'arena_hard.score': 63.25, 'arena_hard.ci_low': 55.5, 'arena_hard.ci_high': 70.125, 'arena_hard.judge_informative': 1, 'arena_hard.position_consistency': 0.9, 'mt_bench.score': 6.25, 'mt_bench.judge_informative': 1 };

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rl-compare-'));
  const stages = [1, 2].map((iteration) => ({ stage: 'evaluate', iteration, status: 'completed', durationMs: 1000, metrics: iteration === 1 ? biased : real }));
  await writeJsonAtomic(path.join(dir, 'r1', 'run.json'), { runId: 'r1', status: 'completed', plan: { iterations: 2, stages: ['evaluate'] }, stages });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('uninformative judge', () => {
  it('marks the benchmark whose judge_informative metric is 0, and only that one', () => {
    const e = evalScores(biased);
    expect(e['arena_hard.score']).toEqual({ value: 50, low: 41.2, high: 58.8, uninformativeJudge: true });
    expect(e['mt_bench.score']).toEqual({ value: 5.5 });
    // the flags themselves are not scores
    expect(Object.keys(e).sort()).toEqual(['arena_hard.score', 'mt_bench.score']);
    expect(evalScores(real)['arena_hard.score']!.uninformativeJudge).toBeUndefined();
  });

  it('compare shows "uninformative judge" instead of the number, the report leaves it off the chart', async () => {
    const cmp = await compareRuns(dir, ['r1']);
    expect(cmp.rows.map((r) => r.eval['arena_hard.score']?.uninformativeJudge)).toEqual([true, undefined]);
    const table = renderCompareTable(cmp).split('\n');
    const [it1, it2] = [table[2]!, table[3]!];
    expect(it1).toContain(UNINFORMATIVE);
    expect(it1).not.toContain('50.00');
    expect(it1).toContain('5.50'); // MT-Bench's judge was informative there
    expect(it2).toContain('63.25 [55.50, 70.13]');
    expect(it2).not.toContain(UNINFORMATIVE);
    const html = renderHtmlReport(cmp);
    expect(html).toContain(`arena_hard.score by iteration (bars: interval) (${UNINFORMATIVE}, not plotted: iteration 1)`);
    expect(html).not.toContain('r1: 50.000');
    expect(html).toContain('r1: 63.250');
  });
});
