// `ratioloop compare`: one row per iteration (of one or more runs) from the run store: data, pairs, training, eval, timings.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { StageName } from '../../workflows/types';
import { readRun, runDirOf, stageDirOf } from '../runStore';

export interface IterationRow {
  runId: string;
  iteration: number;
  prompts?: number;
  pairsKept?: number;
  pairsDropped?: number;
  marginMean?: number;
  marginByDomain: Record<string, number>;
  /** Per routed domain: prompts the score stage routed there and how many of them were guided. */
  routedByDomain: Record<string, { prompts: number; guided: number }>;
  trainLoss?: number;
  trainAccuracy?: number;
  /** Eval scores by metric name; `uninformativeJudge` when the stage flagged that benchmark's judge as carrying no
   *  information (position consistency at chance or one verdict dominating): the value is kept, never shown as real. */
  eval: Record<string, { value: number; low?: number; high?: number; uninformativeJudge?: true; unavailable?: true }>;
  durationsMs: Partial<Record<StageName, number>>;
  trainCurve: { step: number; loss: number }[];
}

export interface Comparison {
  runs: { runId: string; status: string; configPath?: string }[];
  rows: IterationRow[];
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** First numeric metric among several names: stages name a few things differently across versions. */
function pick(m: Record<string, unknown> | undefined, ...keys: string[]): number | undefined {
  for (const k of keys) {
    const v = num(m?.[k]);
    if (v !== undefined) return v;
  }
  return undefined;
}

async function readCurve(file: string): Promise<{ step: number; loss: number }[]> {
  try {
    const text = await readFile(file, 'utf8');
    return text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => num(r.loss) !== undefined && num(r.step) !== undefined)
      .map((r) => ({ step: r.step as number, loss: r.loss as number }));
  } catch {
    return [];
  }
}

/** The evaluate stage writes `<benchmark>.judge_informative` as 1/0 (a metric is a number). */
const judgeUninformative = (m: Record<string, unknown>, bench: string): boolean => {
  const v = m[`${bench}.judge_informative`];
  return v === 0 || v === false;
};

export function evalScores(m: Record<string, unknown> | undefined): IterationRow['eval'] {
  const out: IterationRow['eval'] = {};
  if (!m) return out;
  for (const [k, v] of Object.entries(m)) {
    // AlpacaEval LC is null when its GLM files (df_gamed.csv) were not given: shown as unavailable, never as a number.
    if (v === null && /^alpaca_eval\.lc_win_rate$/.test(k)) { out[k] = { value: NaN, unavailable: true }; continue; }
    const value = num(v);
    if (value === undefined || !/^(arena_hard|alpaca_eval|mt_bench)\./.test(k) || /\.(ci_low|ci_high|se|lc_se|n_|count|judge_|position_)/.test(k)) continue;
    const [bench] = k.split('.') as [string];
    const low = num(m[`${bench}.ci_low`]);
    const high = num(m[`${bench}.ci_high`]);
    const se = num(m[k === `${bench}.lc_win_rate` ? `${bench}.lc_se` : `${bench}.se`]);
    // Intervals as each benchmark reports them: bootstrap CI for ArenaHard, ±1.96 SE for the AlpacaEval win rate.
    const interval = k === `${bench}.score` && low !== undefined && high !== undefined ? { low, high } : (k === `${bench}.win_rate` || k === `${bench}.lc_win_rate`) && se !== undefined ? { low: value - 1.96 * se, high: value + 1.96 * se } : {};
    out[k] = { value, ...interval, ...(judgeUninformative(m, bench) ? { uninformativeJudge: true as const } : {}) };
  }
  return out;
}

export async function compareRuns(runsDir: string, runIds: string[]): Promise<Comparison> {
  const cmp: Comparison = { runs: [], rows: [] };
  for (const id of runIds) {
    const runDir = runDirOf(runsDir, id);
    const rec = await readRun(runDir);
    cmp.runs.push({ runId: id, status: rec.status, ...(rec.configPath ? { configPath: rec.configPath } : {}) });
    for (let k = 1; k <= rec.plan.iterations; k++) {
      const stage = (s: StageName) => rec.stages.find((x) => x.iteration === k && x.stage === s);
      const m = (s: StageName) => stage(s)?.metrics;
      const pairsM = m('pairs');
      const dropped = pairsM?.dropped;
      const droppedTotal = typeof dropped === 'object' && dropped ? Object.values(dropped).reduce<number>((a, v) => a + (num(v) ?? 0), 0) : num(dropped);
      const byDomain: Record<string, number> = {};
      const md = pairsM?.margin_by_domain;
      if (md && typeof md === 'object') for (const [d, v] of Object.entries(md)) { const x = num(v) ?? num((v as Record<string, unknown>)?.mean); if (x !== undefined) byDomain[d] = x; }
      const routed: IterationRow['routedByDomain'] = {};
      for (const [key, v] of Object.entries(m('score') ?? {})) {
        const d = /^router\.([A-Z]+)$/.exec(key)?.[1];
        const n = num(v);
        if (d && n !== undefined) routed[d] = { prompts: n, guided: num(m('score')?.[`guided.${d}`]) ?? 0 };
      }
      const durations: IterationRow['durationsMs'] = {};
      for (const s of rec.plan.stages) { const d = stage(s)?.durationMs; if (d !== undefined) durations[s] = d; }
      cmp.rows.push({
        runId: id,
        iteration: k,
        prompts: pick(m('sample'), 'prompts', 'n_prompts'),
        pairsKept: pick(pairsM, 'kept', 'n_pairs', 'pairs'),
        pairsDropped: droppedTotal,
        marginMean: pick(pairsM, 'margin_mean', 'margin.mean'),
        marginByDomain: byDomain,
        routedByDomain: routed,
        trainLoss: pick(m('train'), 'final_loss', 'train_loss', 'loss'),
        trainAccuracy: pick(m('train'), 'final_preference_accuracy', 'final_accuracy', 'accuracy'),
        eval: evalScores(m('evaluate')),
        durationsMs: durations,
        trainCurve: await readCurve(path.join(stageDirOf(runDir, k, 'train'), 'metrics.jsonl')),
      });
    }
  }
  return cmp;
}

export const UNINFORMATIVE = 'uninformative judge';
export const LC_UNAVAILABLE = 'no official LC';

const f = (v: number | undefined, d = 3): string => (v === undefined ? '–' : Number.isInteger(v) ? String(v) : v.toFixed(d));

/** The comparison as a header and rows of display strings: the CLI's text table and the report's HTML table. */
export function compareTableCells(cmp: Comparison): { header: string[]; rows: string[][] } {
  const evalKeys = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.eval)))].filter((k) => /\.(score|win_rate|lc_win_rate)$/.test(k)).sort();
  const domains = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.marginByDomain)))].sort();
  const routedDomains = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.routedByDomain)))].sort();
  const header = ['run', 'iter', 'prompts', ...routedDomains.map((d) => `${d} (guided)`), 'pairs', 'dropped', 'margin', ...domains.map((d) => `margin ${d}`), 'loss', 'acc', ...evalKeys, 'time'];
  const rows = cmp.rows.map((r) => [
    r.runId,
    String(r.iteration),
    f(r.prompts),
    ...routedDomains.map((d) => { const x = r.routedByDomain[d]; return x ? `${x.prompts} (${x.guided})` : '–'; }),
    f(r.pairsKept),
    f(r.pairsDropped),
    f(r.marginMean, 2),
    ...domains.map((d) => f(r.marginByDomain[d], 2)),
    f(r.trainLoss),
    f(r.trainAccuracy, 2),
    ...evalKeys.map((k) => {
      const e = r.eval[k];
      if (!e) return '–';
      if (e.unavailable) return LC_UNAVAILABLE;
      if (e.uninformativeJudge) return UNINFORMATIVE;
      return e.low !== undefined && e.high !== undefined ? `${e.value.toFixed(2)} [${e.low.toFixed(2)}, ${e.high.toFixed(2)}]` : e.value.toFixed(2);
    }),
    `${(Object.values(r.durationsMs).reduce((a, b) => a + b, 0) / 1000).toFixed(0)}s`,
  ]);
  return { header, rows };
}

export function renderCompareTable(cmp: Comparison): string {
  const { header, rows } = compareTableCells(cmp);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
