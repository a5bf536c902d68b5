// The report page: one self-contained HTML file (inline CSS, SVG and a small script; a Content-Security-Policy that
// allows no network and only that script). Sections: the iteration table, evaluation (scores with intervals on
// their scales, per category, judge health), routing, rewards and margins, lengths, training, pairs, config diff.
import { createHash } from 'node:crypto';
import { compareTableCells, LC_UNAVAILABLE, UNINFORMATIVE, type Comparison } from '../client/compare';
import { barChart, boxChart, lineChart, type Series } from './charts';
import { esc } from './escape';
import type { IterationDetail, PairSample, RunDetail } from './gather';

/** A metric's own scale, shown whole on its axis. */
function scaleOf(key: string): { fixed?: [number, number]; label: string } {
  if (/^(arena_hard\.score|alpaca_eval\.(lc_)?win_rate)$/.test(key)) return { fixed: [0, 100], label: 'win rate vs baseline, % (0–100)' };
  if (/^mt_bench\./.test(key)) return { fixed: [0, 10], label: 'MT-Bench score (1–10; axis from 0)' };
  return { label: `${key} (axis from 0)` };
}

const EVAL_KEY = /\.(score|win_rate|lc_win_rate)$/; // the table's columns (per-category scores have bar charts)

function seriesName(cmp: Comparison, runId: string, k: number): string {
  return cmp.runs.length === 1 ? `iteration ${k}` : `${runId} it${k}`;
}

function table(header: string[], rows: string[][], cls = ''): string {
  const cell = (c: string) => (c === UNINFORMATIVE || c === LC_UNAVAILABLE ? `<td class="flag">${esc(c)}</td>` : `<td>${esc(c)}</td>`);
  return `<table class="${cls}"><thead><tr>${header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map(cell).join('')}</tr>`).join('')}</tbody></table>`;
}

function evalSection(cmp: Comparison, details: RunDetail[]): string {
  const keys = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.eval)))].filter((k) => EVAL_KEY.test(k)).sort();
  const single = cmp.runs.length === 1;
  const charts = keys.map((k) => {
    // A score from an uninformative judge is no result: left off the chart and named in its caption.
    const shown = (r: Comparison['rows'][number]) => r.eval[k] && !r.eval[k].uninformativeJudge && !r.eval[k].unavailable;
    const series: Series[] = cmp.runs.map((run) => ({ name: run.runId, points: cmp.rows.filter((r) => r.runId === run.runId && shown(r)).map((r) => ({ x: r.iteration, y: r.eval[k]!.value, ...(r.eval[k]!.low !== undefined && r.eval[k]!.high !== undefined ? { lo: r.eval[k]!.low, hi: r.eval[k]!.high } : {}) })) }));
    const hasInterval = series.some((s) => s.points.some((p) => p.lo !== undefined));
    const hidden = cmp.rows.filter((r) => r.eval[k]?.uninformativeJudge).map((r) => (single ? `iteration ${r.iteration}` : `${r.runId} it${r.iteration}`));
    const note = hidden.length ? ` (${UNINFORMATIVE}, not plotted: ${hidden.join(', ')})` : '';
    const sc = scaleOf(k);
    return lineChart({ title: `${k} by iteration${hasInterval ? ' (bars: interval)' : ''}${note}`, xLabel: 'iteration', yLabel: sc.label, ...(sc.fixed ? { fixed: sc.fixed } : {}), series, note: hasInterval ? 'ArenaHard: bootstrap 95 % interval; AlpacaEval: ±1.96 standard errors' : undefined });
  });
  // Per category: one chart per benchmark and run, bars per iteration.
  const cats: string[] = [];
  for (const run of details) {
    for (const bench of [...new Set(run.iterations.flatMap((d) => Object.keys(d.categories)))].sort()) {
      const names = [...new Set(run.iterations.flatMap((d) => Object.keys(d.categories[bench] ?? {})))];
      const informative = (d: IterationDetail) => d.judges[bench]?.informative !== false;
      const its = run.iterations.filter((d) => d.categories[bench] && informative(d));
      const hidden = run.iterations.filter((d) => d.categories[bench] && !informative(d)).map((d) => `iteration ${d.iteration}`);
      const isMt = bench === 'mt_bench';
      cats.push(barChart({
        title: `${bench} per ${isMt ? 'category' : 'dataset'}${details.length > 1 ? ` — ${run.runId}` : ''}${hidden.length ? ` (${UNINFORMATIVE}, not plotted: ${hidden.join(', ')})` : ''}`,
        yLabel: isMt ? 'MT-Bench score (1–10; axis from 0)' : 'win rate vs reference, % (0–100)', fixed: isMt ? [0, 10] : [0, 100],
        categories: names, series: its.map((d) => ({ name: `iteration ${d.iteration}`, values: names.map((c) => d.categories[bench]![c]) })),
      }));
    }
  }
  // Judge health: informative or not, position consistency, and why not.
  const jrows: string[][] = [];
  for (const run of details) for (const d of run.iterations) for (const [b, j] of Object.entries(d.judges).sort()) {
    jrows.push([run.runId, String(d.iteration), b, j.judge ?? '–', j.informative ? 'informative' : UNINFORMATIVE, j.positionConsistency !== undefined ? j.positionConsistency.toFixed(2) : '–', j.reasons.join('; ') || '–']);
  }
  const judges = jrows.length ? `<h3>Judge</h3>${table(['run', 'iter', 'benchmark', 'judge', 'verdict', 'position consistency', 'why'], jrows)}` : '';
  const none = charts.length + cats.length + jrows.length === 0 ? '<p class="note">No evaluate results yet.</p>' : '';
  return `<section id="evaluation"><h2>Evaluation</h2>${none}<div class="charts">${charts.join('')}${cats.join('')}</div>${judges}</section>`;
}

function routingSection(cmp: Comparison, details: RunDetail[]): string {
  const domains = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.routedByDomain)))].sort();
  if (!domains.length) return '';
  const rows = cmp.rows.map((r) => {
    const how = details.find((x) => x.runId === r.runId)?.iterations.find((d) => d.iteration === r.iteration)?.routeHow ?? {};
    return [r.runId, String(r.iteration), ...domains.map((d) => { const x = r.routedByDomain[d]; return x ? `${x.prompts} (${x.guided} guided)` : '–'; }), Object.entries(how).sort().map(([h, n]) => `${h}: ${n}`).join(', ') || '–'];
  });
  const last = cmp.rows[cmp.rows.length - 1]!;
  const chart = barChart({ title: `prompts per routed domain and how many were guided${cmp.rows.length > 1 ? ` (${seriesName(cmp, last.runId, last.iteration)})` : ''}`, yLabel: 'prompts', categories: domains, series: [{ name: 'prompts', values: domains.map((d) => last.routedByDomain[d]?.prompts) }, { name: 'guided', values: domains.map((d) => last.routedByDomain[d]?.guided) }] });
  return `<section id="routing"><h2>Routing and guidance</h2>${table(['run', 'iter', ...domains.map((d) => `${d} prompts`), 'routed by'], rows)}<div class="charts">${chart}</div></section>`;
}

function distributionSection(cmp: Comparison, details: RunDetail[]): string {
  const its = details.flatMap((run) => run.iterations.map((d) => ({ name: seriesName(cmp, run.runId, d.iteration), d })));
  const domainsOf = (f: (d: IterationDetail) => Record<string, number[]>) => [...new Set(its.flatMap((x) => Object.keys(f(x.d))))].sort();
  const rewards = boxChart({ title: 'reward of every scored response, per domain and iteration', yLabel: 'reward: Σ log p_strong − log p_weak (nats)', note: 'box: quartiles; line: median; diamond: mean; whiskers: 5th–95th percentile', groups: domainsOf((d) => d.rewards).map((dom) => ({ label: dom, boxes: its.map((x) => ({ name: x.name, values: x.d.rewards[dom] ?? [] })) })) });
  const margins = boxChart({ title: 'margin (chosen − rejected reward) of the kept pairs, per domain and iteration', yLabel: 'margin (nats)', groups: domainsOf((d) => d.margins).map((dom) => ({ label: dom, boxes: its.map((x) => ({ name: x.name, values: x.d.margins[dom] ?? [] })) })) });
  const lengths = boxChart({ title: 'length of chosen vs rejected responses per iteration', yLabel: 'characters', note: 'a chosen side that grows longer iteration after iteration is the length exploitation SimPO runs are known for', groups: its.map((x) => ({ label: x.name, boxes: [{ name: 'chosen', values: x.d.chosenChars }, { name: 'rejected', values: x.d.rejectedChars }] })) });
  const mean = (v: number[]) => (v.length ? (v.reduce((a, b) => a + b, 0) / v.length).toFixed(0) : '–');
  const lrows = its.filter((x) => x.d.chosenChars.length).map((x) => {
    const longer = x.d.chosenChars.filter((c, i) => c > x.d.rejectedChars[i]!).length;
    return [x.name, String(x.d.chosenChars.length), mean(x.d.chosenChars), mean(x.d.rejectedChars), x.d.tokens?.chosen.toFixed(1) ?? '–', x.d.tokens?.rejected.toFixed(1) ?? '–', `${((100 * longer) / x.d.chosenChars.length).toFixed(0)} %`];
  });
  const ltable = lrows.length ? table(['iteration', 'pairs', 'chosen chars (mean)', 'rejected chars (mean)', 'chosen tokens (mean)', 'rejected tokens (mean)', 'chosen longer (chars)'], lrows) : '';
  return `<section id="rewards"><h2>Rewards, margins and lengths</h2><div class="charts">${rewards}${margins}${lengths}</div>${ltable}</section>`;
}

/** Wilson score interval (95 %) for an accuracy over n pairs. */
function wilson(p: number, n: number): [number, number] {
  const z = 1.96, z2 = z * z, den = 1 + z2 / n;
  const c = (p + z2 / (2 * n)) / den, h = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / den;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

function trainingSection(cmp: Comparison, details: RunDetail[]): string {
  const its = details.flatMap((run) => run.iterations.map((d) => ({ name: seriesName(cmp, run.runId, d.iteration), run: run.runId, d })));
  const curve = (f: (s: IterationDetail['steps'][number]) => number | undefined): Series[] => its.map((x) => ({ name: x.name, points: x.d.steps.flatMap((s) => { const y = f(s); return y === undefined ? [] : [{ x: s.step, y }]; }) }));
  // The old report's curve source (the comparison rows) when no run folder was read.
  const loss = details.length ? curve((s) => s.loss) : cmp.rows.filter((r) => r.trainCurve.length).map((r) => ({ name: seriesName(cmp, r.runId, r.iteration), points: r.trainCurve.map((p) => ({ x: p.step, y: p.loss })) }));
  const charts = [
    lineChart({ title: 'SimPO training loss', xLabel: 'step', yLabel: 'loss (axis from 0)', series: loss }),
    lineChart({ title: 'reward accuracy over steps (chosen reward > rejected, per batch)', xLabel: 'step', yLabel: 'accuracy (0–1)', fixed: [0, 1], series: curve((s) => s.accuracy) }),
    lineChart({ title: 'reward margin over steps (β·avg log p, chosen − rejected)', xLabel: 'step', yLabel: 'margin (axis through 0)', series: curve((s) => s.margin) }),
  ];
  const held = cmp.runs.map((run) => ({ name: run.runId, points: (details.find((x) => x.runId === run.runId)?.iterations ?? []).flatMap((d) => {
    if (!d.heldOut) return [];
    const [lo, hi] = d.heldOut.n ? wilson(d.heldOut.accuracy, d.heldOut.n) : [undefined, undefined];
    return [{ x: d.iteration, y: d.heldOut.accuracy, ...(lo !== undefined && hi !== undefined ? { lo, hi } : {}) }];
  }) }));
  if (held.some((s) => s.points.length)) charts.push(lineChart({ title: 'reward accuracy on the held-out pairs after training (bars: 95 % Wilson interval)', xLabel: 'iteration', yLabel: 'accuracy (0–1)', fixed: [0, 1], series: held, note: 'the trained policy\'s SimPO reward on the pairs stage\'s test split (pairs_test), evaluated once by the train stage' }));
  const hrows = its.filter((x) => x.d.heldOut).map((x) => [x.name, String(x.d.heldOut!.n ?? '–'), x.d.heldOut!.accuracy.toFixed(3), x.d.heldOut!.loss?.toFixed(4) ?? '–', x.d.heldOut!.margin?.toFixed(4) ?? '–']);
  return `<section id="training"><h2>Training</h2><div class="charts">${charts.join('')}</div>${hrows.length ? `<h3>Held-out pairs</h3>${table(['iteration', 'pairs', 'reward accuracy', 'loss', 'margin'], hrows)}` : ''}</section>`;
}

const f3 = (v: number | undefined): string => (v === undefined ? '–' : v.toFixed(3));

function pairHtml(p: PairSample): string {
  const prompt = p.prompt.map((m) => `<div class="msg"><span class="role">${esc(m.role)}</span><div class="txt">${esc(m.content)}</div></div>`).join('');
  const first = p.prompt.filter((m) => m.role === 'user').pop()?.content ?? p.prompt[0]?.content ?? '';
  const head = first.length > 110 ? `${first.slice(0, 110)}…` : first;
  return `<details class="pair" data-domain="${esc(p.domain)}"><summary><span class="dom">${esc(p.domain)}</span> <span class="mg">margin ${f3(p.margin)}</span> ${esc(head)}</summary>` +
    `<p class="meta">prompt ${esc(p.promptId)} · ${p.split} split · chosen reward ${f3(p.scoreChosen)} · rejected reward ${f3(p.scoreRejected)}</p>${prompt}` +
    `<div class="sides"><div><h4>chosen (${f3(p.scoreChosen)})</h4><div class="txt">${esc(p.chosen)}</div></div><div><h4>rejected (${f3(p.scoreRejected)})</h4><div class="txt">${esc(p.rejected)}</div></div></div></details>`;
}

function pairsSection(cmp: Comparison, details: RunDetail[]): string {
  const blocks = details.flatMap((run) => run.iterations.filter((d) => d.samples.length).map((d) => {
    const doms = [...new Set(d.samples.map((s) => s.domain))].sort();
    const select = doms.length > 1 ? `<label>domain <select class="dom-filter"><option value="">all</option>${doms.map((x) => `<option value="${esc(x)}">${esc(x)}</option>`).join('')}</select></label>` : '';
    return `<div class="pager"><h3>${esc(seriesName(cmp, run.runId, d.iteration))}: ${d.samples.length} of ${d.pairsTotal} pairs</h3><div class="controls">${select}<button type="button" class="prev">previous</button> <span class="pos"></span> <button type="button" class="next">next</button></div>${d.samples.map(pairHtml).join('')}</div>`;
  }));
  return blocks.length ? `<section id="pairs"><h2>Pairs</h2><p class="note">A sample taken in turn from each domain; click a pair for the prompt, both responses and their rewards.</p>${blocks.join('')}</section>` : '';
}

function flatten(v: unknown, prefix: string, out: Record<string, string>): void {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = JSON.stringify(v) ?? 'undefined';
}

function configSection(details: RunDetail[]): string {
  if (details.length < 2) return '';
  const flat = details.map((d) => { const o: Record<string, string> = {}; flatten(d.config, '', o); return o; });
  const keys = [...new Set(flat.flatMap((o) => Object.keys(o)))].sort().filter((k) => new Set(flat.map((o) => o[k] ?? '(not set)')).size > 1);
  const body = keys.length ? table(['config key', ...details.map((d) => d.runId)], keys.map((k) => [k, ...flat.map((o) => o[k] ?? '(not set)')]), 'diff') : '<p>The runs\' configs are the same.</p>';
  return `<section id="config"><h2>Config differences</h2>${body}</section>`;
}

const CSS = `body{font-family:system-ui,-apple-system,sans-serif;margin:24px auto;max-width:1400px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td:first-child,th:first-child{text-align:left}tbody tr:nth-child(even){background:#fafafa}
td.flag{color:#a33;font-style:italic}.wide{overflow-x:auto}table.diff td{text-align:left;white-space:normal;max-width:420px;overflow-wrap:anywhere}
.charts{display:flex;flex-wrap:wrap;gap:8px}figure.chart-box{margin:0;border:1px solid #ddd;padding:8px;border-radius:4px;background:#fff}
figcaption{font-weight:600;font-size:13px;margin-bottom:4px;max-width:640px}.note{color:#555;font-size:12px;max-width:640px;margin:4px 0}
.notes{background:#fff7e0;border:1px solid #e8c66a;padding:8px 16px;border-radius:4px}
details.pair{border:1px solid #ddd;border-radius:4px;margin:6px 0;padding:6px 10px;background:#fff}details.pair summary{cursor:pointer;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.dom{background:#eef;border-radius:3px;padding:0 4px;font-size:12px}.mg{color:#555;font-size:12px}.meta{color:#555;font-size:12px}
.msg .role{font-size:11px;color:#777;text-transform:uppercase}.txt{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:12px;background:#f7f7f7;padding:6px;border-radius:3px;max-height:360px;overflow:auto}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #eee;z-index:1;font-size:14px}nav a{color:#1f5fa8;text-decoration:none}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:10px}.sides h4{margin:8px 0 4px}.controls{margin:4px 0}.hidden{display:none}`;

// Pages through the pairs five at a time, optionally one domain only. Without script every pair is listed.
const SCRIPT = `(function(){var SIZE=5;document.querySelectorAll('.pager').forEach(function(p){var page=0;var items=Array.prototype.slice.call(p.querySelectorAll('.pair'));var sel=p.querySelector('.dom-filter');var pos=p.querySelector('.pos');function shown(){var d=sel?sel.value:'';return items.filter(function(i){return !d||i.getAttribute('data-domain')===d;});}function draw(){var s=shown();var pages=Math.max(1,Math.ceil(s.length/SIZE));page=Math.min(Math.max(page,0),pages-1);items.forEach(function(i){i.classList.add('hidden');});s.slice(page*SIZE,page*SIZE+SIZE).forEach(function(i){i.classList.remove('hidden');});pos.textContent=s.length?(page*SIZE+1)+'\\u2013'+Math.min(s.length,page*SIZE+SIZE)+' of '+s.length:'none';}p.querySelector('.prev').addEventListener('click',function(){page--;draw();});p.querySelector('.next').addEventListener('click',function(){page++;draw();});if(sel)sel.addEventListener('change',function(){page=0;draw();});draw();});})();`;
const SCRIPT_HASH = createHash('sha256').update(SCRIPT).digest('base64');

const NAV: [string, string][] = [['iterations', 'Iterations'], ['evaluation', 'Evaluation'], ['routing', 'Routing'], ['rewards', 'Rewards and lengths'], ['training', 'Training'], ['pairs', 'Pairs'], ['config', 'Config differences']];

export function renderReport(cmp: Comparison, details: RunDetail[] = []): string {
  const { header, rows } = compareTableCells(cmp);
  const notes = details.flatMap((d) => d.notes.map((n) => (details.length > 1 ? `${d.runId}: ${n}` : n)));
  const csp = `default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-${SCRIPT_HASH}'`;
  const body = `<section id="iterations"><h2>Iterations</h2><div class="wide">${table(header, rows, 'cmp')}</div></section>
${evalSection(cmp, details)}
${routingSection(cmp, details)}
${details.length ? distributionSection(cmp, details) : ''}
${trainingSection(cmp, details)}
${pairsSection(cmp, details)}
${configSection(details)}
`;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}"><meta name="viewport" content="width=device-width, initial-scale=1"><title>ratioloop report: ${esc(cmp.runs.map((r) => r.runId).join(', '))}</title><style>${CSS}</style></head><body>
<h1>ratioloop report</h1><p>${cmp.runs.map((r) => `<b>${esc(r.runId)}</b> (${esc(r.status)})`).join(', ')}</p>
<nav>${NAV.filter(([id]) => body.includes(`<section id="${id}">`)).map(([id, t]) => `<a href="#${id}">${t}</a>`).join(' · ')}</nav>
${notes.length ? `<div class="notes"><b>Incomplete:</b><ul>${notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul></div>` : ''}
${body}
<script>${SCRIPT}</script></body></html>
`;
}
