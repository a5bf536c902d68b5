// What the report shows beyond the comparison rows, read from each run folder by the paths its manifests name:
// reward and margin distributions, chosen/rejected lengths, training curves, held-out accuracy, per-category eval
// scores, judge health and a sample of pairs. A stage that did not finish adds a note instead of data.
import path from 'node:path';
import type { StageName } from '../../workflows/types';
import { readRun, runDirOf, type RunRecord } from '../runStore';
import { eachJsonl, num, readJson, stageFiles, type JsonlRead } from './read';

export interface PairSample {
  split: 'train' | 'test';
  promptId: string;
  domain: string;
  prompt: { role: string; content: string }[];
  chosen: string;
  rejected: string;
  scoreChosen?: number;
  scoreRejected?: number;
  margin?: number;
}

export interface TrainStep { step: number; loss?: number; accuracy?: number; margin?: number }

export interface JudgeHealth { informative: boolean; positionConsistency?: number; judge?: string; reasons: string[] }

export interface IterationDetail {
  iteration: number;
  /** Domain → reward of every scored response (nulls left out). */
  rewards: Record<string, number[]>;
  /** Domain → margin (score_chosen − score_rejected) of every kept pair, train and test. */
  margins: Record<string, number[]>;
  chosenChars: number[];
  rejectedChars: number[];
  /** Mean response tokens of the kept pairs' chosen and rejected sides (pairs stage metrics). */
  tokens?: { chosen: number; rejected: number };
  /** How the score stage routed prompts (label, llm, endpoint, cache, …) → prompt count. */
  routeHow: Record<string, number>;
  steps: TrainStep[];
  /** The trained policy's SimPO reward accuracy on the held-out pairs (train stage eval_* metrics). */
  heldOut?: { accuracy: number; n?: number; loss?: number; margin?: number };
  /** Benchmark → category → score (MT-Bench categories 1–10; AlpacaEval datasets, win rate %). */
  categories: Record<string, Record<string, number>>;
  judges: Record<string, JudgeHealth>;
  samples: PairSample[];
  pairsTotal: number;
}

export interface RunDetail {
  runId: string;
  status: string;
  config: unknown;
  notes: string[];
  iterations: IterationDetail[];
}

/** Pairs kept per iteration for the browsable sample, taken round-robin over domains so every domain shows. */
export const SAMPLE_PAIRS = 40;
/** Longer texts are cut in the sample (the run folder has them whole). */
export const MAX_TEXT = 4000;

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));
const cut = (s: string): string => (s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)} … [${s.length - MAX_TEXT} more characters]` : s);
const contentOf = (v: unknown): string => (Array.isArray(v) ? str((v[0] as { content?: unknown } | undefined)?.content) : str(v));

function readNote(notes: string[], what: string, r: JsonlRead): void {
  if (r.missing) notes.push(`${what}: file missing`);
  else if (r.bad) notes.push(`${what}: ${r.bad} unreadable line${r.bad > 1 ? 's' : ''} skipped`);
}

function stageNotes(rec: RunRecord, k: number, notes: string[]): void {
  for (const s of rec.plan.stages) {
    const st = rec.stages.find((x) => x.iteration === k && x.stage === s);
    if (!st) notes.push(`iteration ${k}: ${s} not started`);
    else if (st.status === 'skipped' && st.note) notes.push(`iteration ${k}: ${s} skipped (${st.note})`);
    else if (st.status !== 'done' && st.status !== 'skipped') notes.push(`iteration ${k}: ${s} ${st.status}${st.error ? `: ${st.error.split('\n')[0]!.slice(0, 300)}` : ''}${st.note ? ` (${st.note})` : ''}`);
  }
}

async function scoreDetail(runDir: string, k: number, d: IterationDetail, notes: string[]): Promise<boolean> {
  const f = await stageFiles(runDir, k, 'score');
  if (!f) return false;
  readNote(notes, `iteration ${k}: score scores`, await eachJsonl(f.outputs.scores, (row) => {
    const dom = str(row.domain) || 'UNKNOWN';
    const vals = Array.isArray(row.rewards) ? row.rewards.map(num).filter((x): x is number => x !== undefined) : [];
    (d.rewards[dom] ??= []).push(...vals);
  }));
  if (f.outputs.routes) {
    await eachJsonl(f.outputs.routes, (row) => { const how = str(row.how) || '?'; d.routeHow[how] = (d.routeHow[how] ?? 0) + 1; });
  } else {
    for (const [key, v] of Object.entries(f.metrics)) { const how = /^route_how\.(.+)$/.exec(key)?.[1]; const n = num(v); if (how && n !== undefined) d.routeHow[how] = n; }
  }
  return true;
}

async function pairsDetail(runDir: string, k: number, d: IterationDetail, notes: string[]): Promise<boolean> {
  const f = await stageFiles(runDir, k, 'pairs');
  if (!f) return false;
  const ct = num(f.metrics.chosen_tokens_mean), rt = num(f.metrics.rejected_tokens_mean);
  if (ct !== undefined && rt !== undefined) d.tokens = { chosen: ct, rejected: rt };
  const byDomain: Record<string, PairSample[]> = {};
  for (const [name, split] of [['pairs', 'train'], ['pairs_test', 'test']] as const) {
    readNote(notes, `iteration ${k}: pairs ${name}`, await eachJsonl(f.outputs[name], (row) => {
      const dom = str(row.domain) || 'UNKNOWN';
      const chosen = contentOf(row.chosen), rejected = contentOf(row.rejected);
      const sc = num(row.score_chosen), sr = num(row.score_rejected);
      const margin = num(row.margin) ?? (sc !== undefined && sr !== undefined ? sc - sr : undefined);
      d.pairsTotal++;
      if (margin !== undefined) (d.margins[dom] ??= []).push(margin);
      d.chosenChars.push(chosen.length);
      d.rejectedChars.push(rejected.length);
      const list = (byDomain[dom] ??= []);
      if (list.length < SAMPLE_PAIRS) {
        const prompt = Array.isArray(row.prompt) ? row.prompt.map((m) => ({ role: str((m as { role?: unknown }).role), content: cut(str((m as { content?: unknown }).content)) })) : [{ role: 'user', content: cut(str(row.prompt)) }];
        list.push({ split, promptId: str(row.prompt_id), domain: dom, prompt, chosen: cut(chosen), rejected: cut(rejected), ...(sc !== undefined ? { scoreChosen: sc } : {}), ...(sr !== undefined ? { scoreRejected: sr } : {}), ...(margin !== undefined ? { margin } : {}) });
      }
    }));
  }
  const lists = Object.keys(byDomain).sort().map((dom) => byDomain[dom]!);
  for (let i = 0; d.samples.length < SAMPLE_PAIRS && lists.some((l) => i < l.length); i++) {
    for (const l of lists) if (i < l.length && d.samples.length < SAMPLE_PAIRS) d.samples.push(l[i]!);
  }
  return true;
}

async function trainDetail(runDir: string, k: number, d: IterationDetail, notes: string[]): Promise<boolean> {
  const f = await stageFiles(runDir, k, 'train');
  // An unfinished train stage (running, failed, cancelled) keeps the steps logged so far in partial/metrics.jsonl.
  const partial = path.join(runDir, `iter-${k}`, 'train', 'partial', 'metrics.jsonl');
  const read = await eachJsonl(f ? f.outputs.metrics : partial, (row) => {
    const step = num(row.step);
    if (step === undefined) return;
    const s: TrainStep = { step };
    const loss = num(row.loss), acc = num(row['rewards/accuracies']), margin = num(row['rewards/margins']);
    if (loss !== undefined) s.loss = loss;
    if (acc !== undefined) s.accuracy = acc;
    if (margin !== undefined) s.margin = margin;
    d.steps.push(s);
  });
  if (!f) {
    if (read.rows) notes.push(`iteration ${k}: train not finished: its curves are the ${read.rows} steps logged so far (partial/metrics.jsonl)`);
    return false;
  }
  readNote(notes, `iteration ${k}: train metrics`, read);
  const acc = num(f.metrics['eval_rewards/accuracies']);
  if (acc !== undefined) {
    const n = num(f.metrics.test_pairs), loss = num(f.metrics.eval_loss), margin = num(f.metrics['eval_rewards/margins']);
    d.heldOut = { accuracy: acc, ...(n !== undefined ? { n } : {}), ...(loss !== undefined ? { loss } : {}), ...(margin !== undefined ? { margin } : {}) };
  }
  return true;
}

/** AlpacaEval's win rate (100·mean(p − 1), a 0 preference counting as a tie) per dataset of its annotations. */
function alpacaByDataset(rows: unknown): Record<string, number> {
  const by: Record<string, number[]> = {};
  for (const r of Array.isArray(rows) ? rows : []) {
    const a = r as { dataset?: unknown; preference?: unknown };
    let p = num(a.preference);
    if (p === 0) p = 1.5;
    if (p === undefined || p < 1 || p > 2) continue;
    (by[str(a.dataset) || '(none)'] ??= []).push(p - 1);
  }
  return Object.fromEntries(Object.entries(by).sort().map(([k, v]) => [k, (100 * v.reduce((a, b) => a + b, 0)) / v.length]));
}

async function evaluateDetail(runDir: string, k: number, d: IterationDetail, notes: string[]): Promise<boolean> {
  const f = await stageFiles(runDir, k, 'evaluate');
  if (!f) return false;
  const summary = await readJson(f.outputs.summary ?? path.join(runDir, `iter-${k}`, 'evaluate', 'summary.json'));
  if (!summary || typeof summary !== 'object') { notes.push(`iteration ${k}: evaluate summary.json missing or unreadable`); return true; }
  const benches = ((summary as { benchmarks?: unknown }).benchmarks ?? {}) as Record<string, Record<string, unknown>>;
  for (const [b, res] of Object.entries(benches)) {
    if (!res || typeof res !== 'object') continue;
    const stats = (res.judge_stats ?? {}) as Record<string, unknown>;
    const judge = res.judge as { name?: unknown; model?: unknown } | undefined;
    const pc = num(stats.position_consistency);
    d.judges[b] = { informative: res.judge_informative !== false, reasons: Array.isArray(stats.uninformative_because) ? stats.uninformative_because.map(str) : [], ...(pc !== undefined ? { positionConsistency: pc } : {}), ...(judge ? { judge: str(judge.name ?? judge.model) } : {}) };
    const cats = res.per_category;
    if (cats && typeof cats === 'object') {
      const c = Object.fromEntries(Object.entries(cats as Record<string, unknown>).flatMap(([name, v]) => (num(v) !== undefined ? [[name || '(none)', num(v)!]] : [])));
      if (Object.keys(c).length) d.categories[b] = c;
    }
  }
  if (f.outputs.alpaca_eval_annotations) {
    const c = alpacaByDataset(await readJson(f.outputs.alpaca_eval_annotations));
    if (Object.keys(c).length) d.categories.alpaca_eval = c;
  }
  return true;
}

const DETAIL: Partial<Record<StageName, (runDir: string, k: number, d: IterationDetail, notes: string[]) => Promise<boolean>>> = {
  score: scoreDetail, pairs: pairsDetail, train: trainDetail, evaluate: evaluateDetail,
};

export async function gatherRun(runsDir: string, runId: string): Promise<RunDetail> {
  const runDir = runDirOf(runsDir, runId);
  const rec = await readRun(runDir);
  const out: RunDetail = { runId, status: rec.status, config: rec.config, notes: [], iterations: [] };
  if (rec.status !== 'completed') out.notes.push(`the run is ${rec.status}${rec.error ? `: ${rec.error.split('\n')[0]!.slice(0, 300)}` : ''}; this report shows what its folder holds`);
  for (let k = 1; k <= rec.plan.iterations; k++) {
    stageNotes(rec, k, out.notes);
    const d: IterationDetail = { iteration: k, rewards: {}, margins: {}, chosenChars: [], rejectedChars: [], routeHow: {}, steps: [], categories: {}, judges: {}, samples: [], pairsTotal: 0 };
    for (const s of rec.plan.stages) {
      try {
        const read = DETAIL[s];
        const st = rec.stages.find((x) => x.iteration === k && x.stage === s)?.status;
        // A stage recorded done whose folder lacks its manifest: the folder was moved, pruned or copied in part.
        if (read && !(await read(runDir, k, d, out.notes)) && st === 'done') out.notes.push(`iteration ${k}: ${s} is recorded done but ${path.join(`iter-${k}`, s, 'manifest.json')} is missing`);
      } catch (e) {
        out.notes.push(`iteration ${k}: ${s} outputs could not be read: ${(e as Error).message}`);
      }
    }
    out.iterations.push(d);
  }
  return out;
}
