// The HTML report from run folders (test/reportFixture.ts, real layouts): what it reads by the manifests' paths
// (also from a run folder moved since), what a failed or incomplete run shows, escaping of model text, honest axes,
// the config diff of several runs, and the atomic write.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRuns } from '../src/client/compare';
import { renderHtmlReport, writeHtmlReport, gatherDetails } from '../src/client/report';
import { validateConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { niceTicks } from '../src/report/charts';
import { gatherRun } from '../src/report/gather';
import { writeJsonAtomic } from '../src/runStore';
import { HOSTILE, makeReportRun } from './reportFixture';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rl-report-'));
  // `a` failed in iteration 2's train; its manifests name the folder it had on another machine.
  await makeReportRun(dir, { runId: 'a', recordedRunDir: '/elsewhere/runs/a' });
  await makeReportRun(dir, { runId: 'b', seed: 9, beta: 2.5, complete: true });
  // `gone`: run.json says every stage of iteration 1 is done, but the stage folders are not there.
  await writeJsonAtomic(path.join(dir, 'gone', 'run.json'), {
    runId: 'gone', status: 'completed', config: {}, plan: { iterations: 1, stages: ['score', 'pairs', 'train', 'evaluate'] },
    stages: ['score', 'pairs', 'train', 'evaluate'].map((stage) => ({ stage, iteration: 1, status: 'done', durationMs: 1 })),
  });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The <figure> whose caption starts with `title`. */
function figure(html: string, title: string): string {
  const at = html.indexOf(`<figcaption>${title}`);
  expect(at, `figure "${title}"`).toBeGreaterThan(0);
  return html.slice(at, html.indexOf('</figure>', at));
}

describe('report data from a run folder', () => {
  it('reads every stage output by its manifest path, moved folder included', async () => {
    const run = await gatherRun(dir, 'a');
    const [it1, it2] = run.iterations;
    // 4 prompts per domain × 4 responses, one null reward in CHAT
    expect(Object.fromEntries(Object.entries(it1!.rewards).map(([d, v]) => [d, v.length]))).toEqual({ CHAT: 15, SAFETY: 16, REASONING: 16 });
    expect(Object.values(it1!.margins).map((v) => v.length)).toEqual([4, 4, 4]);
    expect(it1!.routeHow).toEqual({ label: 12 });
    expect(it1!.pairsTotal).toBe(12);
    expect(it1!.tokens).toEqual({ chosen: 20, rejected: 8 });
    expect(it1!.samples.map((s) => s.domain).slice(0, 3)).toEqual(['CHAT', 'REASONING', 'SAFETY']); // in turn per domain
    expect(it1!.samples.filter((s) => s.split === 'test')).toHaveLength(3);
    expect(it1!.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(it1!.steps[5]).toMatchObject({ accuracy: 0.9, margin: expect.closeTo(0.45, 9) });
    expect(it1!.heldOut).toEqual({ accuracy: 2 / 3, n: 3, loss: 0.61, margin: 0.12 });
    expect(it1!.categories.mt_bench).toEqual({ writing: 6, roleplay: 5.5, reasoning: 4, math: 2, coding: 4 });
    // AlpacaEval per dataset: 100·mean(p − 1), a 0 preference is a tie
    expect(it1!.categories.alpaca_eval).toEqual({ helpful_base: 37.5, koala: 100, oasst: 50 });
    expect(it1!.judges.arena_hard).toMatchObject({ informative: false, positionConsistency: 0 });
    expect(it1!.judges.mt_bench!.informative).toBe(true);
    // iteration 2 failed in train: what score and pairs wrote is there, the rest is named
    expect(Object.keys(it2!.rewards).length).toBe(3);
    expect(it2!.steps.map((x) => x.step)).toEqual([1, 2]); // from the failed stage's partial/metrics.jsonl
    expect(it2!.heldOut).toBeUndefined();
    expect(run.notes).toEqual([
      'the run is failed: train (iteration 2) failed; this report shows what its folder holds',
      'iteration 2: train failed: BadInput: pairs.jsonl:3: something went wrong',
      'iteration 2: evaluate not started',
      'iteration 2: train not finished: its curves are the 2 steps logged so far (partial/metrics.jsonl)',
    ]);
  });

  it('a run recorded done whose stage folders are gone renders with a note, never throws', async () => {
    const run = await gatherRun(dir, 'gone');
    expect(run.notes).toEqual(['score', 'pairs', 'train', 'evaluate'].map((s) => `iteration 1: ${s} is recorded done but iter-1/${s}/manifest.json is missing`));
    const cmp = await compareRuns(dir, ['gone']);
    const html = renderHtmlReport(cmp, await gatherDetails(dir, cmp));
    expect(html).toContain('is recorded done but iter-1/train/manifest.json is missing');
    expect(html).toContain('<figcaption>SimPO training loss</figcaption><p class="note">no data</p>');
    expect(html).toContain('No evaluate results yet.');
  });
});

describe('report page', () => {
  let html: string;
  beforeAll(async () => {
    const cmp = await compareRuns(dir, ['a']);
    html = renderHtmlReport(cmp, await gatherDetails(dir, cmp));
  });

  it('is one self-contained page: a real table, charts with data, no network, no <pre>', () => {
    expect(html).toMatch(/<table class="cmp"><thead><tr><th>run<\/th><th>iter<\/th>/);
    expect(html).not.toContain('<pre');
    expect(html).not.toMatch(/\b(src|href)="(https?:)?\/\//); // nothing fetched
    const marks = [...html.matchAll(/<svg class="chart" data-marks="(\d+)"/g)].map((m) => Number(m[1]));
    expect(marks.length).toBeGreaterThanOrEqual(10);
    for (const title of ['reward of every scored response', 'margin (chosen − rejected reward)', 'length of chosen vs rejected', 'SimPO training loss', 'reward accuracy over steps', 'reward margin over steps', 'reward accuracy on the held-out pairs', 'mt_bench per category', 'alpaca_eval per dataset', 'prompts per routed domain']) {
      expect(Number(/data-marks="(\d+)"/.exec(figure(html, title))![1]), title).toBeGreaterThan(0);
    }
  });

  it('shows model text as text: no markup from a response or prompt gets through', () => {
    expect(html).not.toContain('<script>window.__pwned');
    expect(html).not.toContain('<img src=x');
    expect(html).toContain('&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt; &amp; &#39;quotes&#39;');
    expect(HOSTILE).toContain('<script>'); // the fixture really is hostile
    // the page's only script is its own, allowed by hash in the Content-Security-Policy (an injected one would not run)
    const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
    expect(scripts).toHaveLength(1);
    const hash = createHash('sha256').update(scripts[0]!).digest('base64');
    expect(html).toContain(`script-src 'sha256-${hash}'`);
    expect(html).toContain("default-src 'none'");
  });

  it('plots scores on their whole scale with intervals, and no score of an uninformative judge', () => {
    const alpaca = figure(html, 'alpaca_eval.win_rate by iteration (bars: interval)');
    expect(alpaca).toContain('win rate vs baseline, % (0–100)');
    expect(alpaca).toMatch(/>0<\/text>/);
    expect(alpaca).toMatch(/>100<\/text>/);
    expect(alpaca).toContain('a: [23.160, 38.840]'); // 31 ± 1.96·4
    const mt = figure(html, 'mt_bench.score by iteration');
    expect(mt).toMatch(/>10<\/text>/);
    expect(mt).toContain('MT-Bench score (1–10; axis from 0)');
    expect(figure(html, 'arena_hard.score by iteration (uninformative judge, not plotted: iteration 1)')).toContain('no data');
    expect(html).toContain('<td class="flag">uninformative judge</td>');
    expect(html).toContain('position consistency 0.00 is not above chance 0.33');
    expect(html).toContain('4 (4 guided)'); // SAFETY and REASONING prompts, all guided
    // held-out accuracy 2/3 of 3 pairs with its Wilson interval
    expect(figure(html, 'reward accuracy on the held-out pairs')).toMatch(/a: \[0\.20\d, 0\.9\d\d\]/);
  });

  it('names what a failed run lacks', () => {
    expect(html).toContain('<b>Incomplete:</b>');
    expect(html).toContain('iteration 2: train failed: BadInput: pairs.jsonl:3: something went wrong');
  });

  it('several runs: the config keys that differ, and only those', async () => {
    const cmp = await compareRuns(dir, ['a', 'b']);
    const two = renderHtmlReport(cmp, await gatherDetails(dir, cmp));
    const diff = two.slice(two.indexOf('<section id="config">'));
    const keys = [...diff.matchAll(/<tr><td>([^<]+)<\/td>/g)].map((m) => m[1]);
    expect(keys).toEqual(['name', 'seed', 'train.beta']);
    expect(diff).toContain('<td>2</td><td>2.5</td>');
    expect(two).toContain('a: iteration 2: train failed'); // notes say which run
  });
});

it('writes the report atomically (no temp file left) and rounds axes to ticks', async () => {
  const cmp = await compareRuns(dir, ['b']);
  const out = path.join(dir, 'out');
  await writeHtmlReport(cmp, path.join(out, 'report.html'), dir);
  expect(await readdir(out)).toEqual(['report.html']);
  expect(await readFile(path.join(out, 'report.html'), 'utf8')).toContain('<b>b</b> (completed)');
  expect(niceTicks(0, 100)).toEqual([0, 20, 40, 60, 80, 100]);
  expect(niceTicks(-3.2, 7.9)).toEqual([-2.5, 0, 2.5, 5, 7.5]);
});

it('train.report_to unset stays out of the train params (so older configs keep their spec hashes)', () => {
  const base = { name: 't', models: { policy: { path: '/m' }, strong: { path: '/m' }, weak: { path: '/m' } }, prompts: { path: '/p.jsonl' }, evaluate: { enabled: false } };
  const unset = validateConfig(base).config!;
  expect('report_to' in resolvePlan(unset, { configPath: '/c.yaml', runId: 'x' }).stagePlans.train.params).toBe(false);
  const set = validateConfig({ ...base, train: { report_to: ['wandb', 'tensorboard'] } }).config!;
  expect(resolvePlan(set, { configPath: '/c.yaml', runId: 'x' }).stagePlans.train.params.report_to).toEqual(['wandb', 'tensorboard']);
  expect(validateConfig({ ...base, train: { report_to: 'mlflow' } }).issues.map((i) => i.path)).toContain('train.report_to');
});
