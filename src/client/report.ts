// Self-contained HTML report (inline SVG, no network assets): eval scores and training curves across iterations.
import { writeFile } from 'node:fs/promises';
import type { Comparison } from './compare';
import { renderCompareTable, UNINFORMATIVE } from './compare';

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

type Point = [number, number, number?, number?]; // x, y, and an optional interval (low, high)

function lineChart(title: string, series: { name: string; points: Point[] }[], xLabel: string): string {
  const W = 560, H = 260, L = 50, B = 36, T = 28, R = 170;
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return `<figure><figcaption>${esc(title)}</figcaption><p>no data</p></figure>`;
  const xs = pts.map((p) => p[0]), ys = pts.flatMap((p) => [p[1], ...(p[2] !== undefined && p[3] !== undefined ? [p[2], p[3]] : [])]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; // keep points off the frame
  y0 -= pad; y1 += pad;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  const body = series.map((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const path = s.points.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
    const bars = s.points.filter((p) => p[2] !== undefined && p[3] !== undefined).map((p) => `<line x1="${sx(p[0]).toFixed(1)}" x2="${sx(p[0]).toFixed(1)}" y1="${sy(p[2]!).toFixed(1)}" y2="${sy(p[3]!).toFixed(1)}" stroke="${c}" stroke-opacity="0.5" stroke-width="6"><title>${esc(s.name)}: [${p[2]!.toFixed(3)}, ${p[3]!.toFixed(3)}]</title></line>`).join('');
    const dots = s.points.map((p) => `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3" fill="${c}"><title>${esc(s.name)}: ${p[1].toFixed(3)}</title></circle>`).join('');
    const label = s.name.length > 26 ? `…${s.name.slice(-25)}` : s.name;
    return `${bars}<path d="${path}" fill="none" stroke="${c}" stroke-width="2"/>${dots}<text x="${W - R + 8}" y="${T + 14 * i + 10}" fill="${c}" font-size="11">${esc(label)}</text>`;
  }).join('');
  const axes = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#888"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#888"/>` +
    `<text x="${L}" y="${H - 8}" font-size="11">${esc(xLabel)} ${f(x0)}…${f(x1)}</text><text x="4" y="${T}" font-size="11">${f(y1)}</text><text x="4" y="${H - B}" font-size="11">${f(y0)}</text>`;
  return `<figure><figcaption>${esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${axes}${body}</svg></figure>`;
}
const f = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(3));

export function renderHtmlReport(cmp: Comparison): string {
  const evalKeys = [...new Set(cmp.rows.flatMap((r) => Object.keys(r.eval)))].filter((k) => /\.(score|win_rate|lc_win_rate)$/.test(k)).sort();
  const charts: string[] = [];
  const single = cmp.runs.length === 1;
  for (const k of evalKeys) {
    // A score from an uninformative judge is no result: left off the chart and named in its caption.
    const shown = (r: Comparison['rows'][number]) => r.eval[k] && !r.eval[k].uninformativeJudge && !r.eval[k].unavailable;
    const series = cmp.runs.map((run) => ({ name: run.runId, points: cmp.rows.filter((r) => r.runId === run.runId && shown(r)).map((r): Point => [r.iteration, r.eval[k]!.value, r.eval[k]!.low, r.eval[k]!.high]) }));
    const hasInterval = series.some((x) => x.points.some((p) => p[2] !== undefined));
    const hidden = cmp.rows.filter((r) => r.eval[k]?.uninformativeJudge).map((r) => (single ? `iteration ${r.iteration}` : `${r.runId} it${r.iteration}`));
    const note = hidden.length ? ` (${UNINFORMATIVE}, not plotted: ${hidden.join(', ')})` : '';
    charts.push(lineChart(`${k} by iteration${hasInterval ? ' (bars: interval)' : ''}${note}`, series, 'iteration'));
  }
  const curves = cmp.rows.filter((r) => r.trainCurve.length > 0).map((r) => ({ name: single ? `iteration ${r.iteration}` : `${r.runId} it${r.iteration}`, points: r.trainCurve.map((p): Point => [p.step, p.loss]) }));
  charts.push(lineChart('SimPO training loss', curves, 'step'));
  return `<!doctype html><html><head><meta charset="utf-8"><title>ratioloop report</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}pre{background:#f6f6f6;padding:12px;overflow:auto}figure{display:inline-block;margin:8px;border:1px solid #ddd;padding:8px}figcaption{font-weight:600;margin-bottom:4px}</style>
</head><body><h1>ratioloop report</h1><p>${cmp.runs.map((r) => `${esc(r.runId)} (${esc(r.status)})`).join(', ')}</p>
<pre>${esc(renderCompareTable(cmp))}</pre>${charts.join('\n')}</body></html>\n`;
}

export async function writeHtmlReport(cmp: Comparison, file: string): Promise<void> {
  await writeFile(file, renderHtmlReport(cmp));
}
