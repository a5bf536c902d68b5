// Inline SVG charts for the report: lines with intervals, box plots of distributions, grouped bars. Axes are honest:
// a chart's y range is its metric's whole scale when it has one (0–100 %, 0–1, MT-Bench 0–10) and otherwise includes
// zero, with ticks and the unit written on the axis, so a 0.3-point change never fills the frame.
import { esc } from './escape';

export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const W = 640, H = 300, L = 62, R = 168, T = 14, B = 46;
const PW = W - L - R, PH = H - T - B;

export const fmt = (v: number): string => {
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
};

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count + 0.5) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  return out;
}

export interface Domain { lo: number; hi: number }

/** The y range: a fixed scale widened only if data leave it, else the data's range with zero in it, on round ticks. */
function yDomain(values: number[], fixed?: [number, number], includeZero = true): Domain {
  let lo = fixed ? fixed[0] : includeZero ? 0 : Infinity;
  let hi = fixed ? fixed[1] : includeZero ? 0 : -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return { lo: 0, hi: 1 };
  if (lo === hi) hi = lo + 1;
  if (fixed && lo === fixed[0] && hi === fixed[1]) return { lo, hi };
  // out to whole tick steps, so the frame ends on a labelled value
  const t = niceTicks(lo, hi);
  const step = t.length > 1 ? t[1]! - t[0]! : 1;
  return { lo: Math.floor(lo / step + 1e-9) * step, hi: Math.ceil(hi / step - 1e-9) * step };
}

const sy = (d: Domain, v: number): number => T + PH - ((v - d.lo) / (d.hi - d.lo)) * PH;
const n1 = (v: number): string => v.toFixed(1);

function yAxis(d: Domain, label: string): string {
  const ticks = niceTicks(d.lo, d.hi).filter((v) => v >= d.lo - 1e-9 && v <= d.hi + 1e-9);
  const grid = ticks.map((v) => `<line x1="${L}" x2="${L + PW}" y1="${n1(sy(d, v))}" y2="${n1(sy(d, v))}" stroke="${v === 0 ? '#888' : '#e4e4e4'}"/><text x="${L - 6}" y="${n1(sy(d, v) + 4)}" text-anchor="end" font-size="11">${esc(fmt(v))}</text>`).join('');
  return `${grid}<line x1="${L}" y1="${T}" x2="${L}" y2="${T + PH}" stroke="#888"/><text transform="translate(14 ${T + PH / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(label)}</text>`;
}

/** names[i] gets colour i unless `colorOf` says otherwise (a series left out keeps the others' colours). */
function legend(names: string[], colorOf: (i: number) => number = (i) => i): string {
  return names.map((n, i) => {
    const label = n.length > 24 ? `…${n.slice(-23)}` : n;
    return `<rect x="${W - R + 10}" y="${T + 16 * i + 2}" width="10" height="10" fill="${COLORS[colorOf(i) % COLORS.length]}"/><text x="${W - R + 26}" y="${T + 16 * i + 11}" font-size="11">${esc(label)}<title>${esc(n)}</title></text>`;
  }).join('');
}

function figure(title: string, note: string | undefined, marks: number, svg: string): string {
  return `<figure class="chart-box"><figcaption>${esc(title)}</figcaption><svg class="chart" data-marks="${marks}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${svg}</svg>${note ? `<p class="note">${esc(note)}</p>` : ''}</figure>`;
}

const empty = (title: string, why: string): string => `<figure class="chart-box"><figcaption>${esc(title)}</figcaption><p class="note">${esc(why)}</p></figure>`;

export interface Series { name: string; points: { x: number; y: number; lo?: number; hi?: number }[] }

export interface LineOpts { title: string; xLabel: string; yLabel: string; fixed?: [number, number]; includeZero?: boolean; note?: string; series: Series[] }

/** Lines over a numeric x (iteration, step), each point's interval as a bar. */
export function lineChart(o: LineOpts): string {
  const series = o.series.filter((s) => s.points.length > 0);
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return empty(o.title, 'no data');
  const d = yDomain(pts.flatMap((p) => [p.y, ...(p.lo !== undefined && p.hi !== undefined ? [p.lo, p.hi] : [])]), o.fixed, o.includeZero ?? true);
  let x0 = Math.min(...pts.map((p) => p.x)), x1 = Math.max(...pts.map((p) => p.x));
  const intX = pts.every((p) => Number.isInteger(p.x)); // iterations, steps: no tick between two of them
  if (x0 === x1) { x0 -= intX ? 0.5 : 1; x1 += intX ? 0.5 : 1; }
  const sx = (x: number): number => L + 10 + ((x - x0) / (x1 - x0)) * (PW - 20);
  const xt = niceTicks(x0, x1, 6).filter((v) => v >= x0 && v <= x1 && (!intX || Number.isInteger(v)));
  const xAxis = `<line x1="${L}" y1="${T + PH}" x2="${L + PW}" y2="${T + PH}" stroke="#888"/>` + xt.map((v) => `<text x="${n1(sx(v))}" y="${T + PH + 15}" text-anchor="middle" font-size="11">${esc(fmt(v))}</text>`).join('') + `<text x="${L + PW / 2}" y="${H - 8}" text-anchor="middle" font-size="11">${esc(o.xLabel)}</text>`;
  let marks = 0;
  const body = series.map((s) => {
    const c = COLORS[o.series.indexOf(s) % COLORS.length]!;
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    const line = sorted.length > 1 ? `<path d="${sorted.map((p, j) => `${j ? 'L' : 'M'}${n1(sx(p.x))},${n1(sy(d, p.y))}`).join(' ')}" fill="none" stroke="${c}" stroke-width="2"/>` : '';
    const bars = sorted.filter((p) => p.lo !== undefined && p.hi !== undefined).map((p) => `<line class="interval" x1="${n1(sx(p.x))}" x2="${n1(sx(p.x))}" y1="${n1(sy(d, p.lo!))}" y2="${n1(sy(d, p.hi!))}" stroke="${c}" stroke-opacity="0.45" stroke-width="7"><title>${esc(s.name)}: [${p.lo!.toFixed(3)}, ${p.hi!.toFixed(3)}]</title></line>`).join('');
    const dots = sorted.length <= 200 ? sorted.map((p) => `<circle cx="${n1(sx(p.x))}" cy="${n1(sy(d, p.y))}" r="3" fill="${c}"><title>${esc(s.name)}: ${p.y.toFixed(3)}</title></circle>`).join('') : '';
    marks += sorted.length;
    return bars + line + dots;
  }).join('');
  return figure(o.title, o.note, marks, yAxis(d, o.yLabel) + xAxis + body + legend(series.map((s) => s.name), (i) => o.series.indexOf(series[i]!)));
}

export interface BoxGroup { label: string; boxes: { name: string; values: number[] }[] }

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const i = Math.floor(pos);
  return sorted[i]! + (sorted[Math.min(i + 1, sorted.length - 1)]! - sorted[i]!) * (pos - i);
}

export interface BoxOpts { title: string; yLabel: string; fixed?: [number, number]; note?: string; groups: BoxGroup[] }

/** Box plots (box: quartiles, line: median, diamond: mean, whiskers: 5th–95th percentile, dots beyond them) in groups
 *  along x; boxes with the same name share a colour across groups (an iteration, or a chosen/rejected side). */
export function boxChart(o: BoxOpts): string {
  const groups = o.groups.map((g) => ({ ...g, boxes: g.boxes.filter((b) => b.values.length > 0) })).filter((g) => g.boxes.length > 0);
  if (groups.length === 0) return empty(o.title, 'no data');
  const names = [...new Set(groups.flatMap((g) => g.boxes.map((b) => b.name)))];
  const stats = groups.map((g) => g.boxes.map((b) => {
    const s = [...b.values].sort((x, y) => x - y);
    return { name: b.name, n: s.length, min: s[0]!, max: s[s.length - 1]!, p5: quantile(s, 0.05), q1: quantile(s, 0.25), med: quantile(s, 0.5), q3: quantile(s, 0.75), p95: quantile(s, 0.95), mean: s.reduce((a, v) => a + v, 0) / s.length, out: s.filter((v) => v < quantile(s, 0.05) || v > quantile(s, 0.95)) };
  }));
  const d = yDomain(stats.flat().flatMap((s) => [s.min, s.max]), o.fixed, true);
  const gw = PW / groups.length;
  let marks = 0;
  const body = groups.map((g, gi) => {
    const bw = Math.min(36, (gw - 12) / Math.max(1, g.boxes.length));
    const x0 = L + gi * gw + (gw - bw * g.boxes.length) / 2;
    const boxes = stats[gi]!.map((s, bi) => {
      const c = COLORS[names.indexOf(s.name) % COLORS.length]!;
      const x = x0 + bi * bw + 2, w = bw - 4, cx = x + w / 2;
      const tip = `${g.label}, ${s.name}: n=${s.n}, median ${fmt(s.med)}, mean ${fmt(s.mean)}, quartiles [${fmt(s.q1)}, ${fmt(s.q3)}], range [${fmt(s.min)}, ${fmt(s.max)}]`;
      const outs = s.out.slice(0, 200).map((v) => `<circle cx="${n1(cx)}" cy="${n1(sy(d, v))}" r="1.6" fill="${c}" fill-opacity="0.5"/>`).join('');
      marks++;
      return `<g class="box"><title>${esc(tip)}</title><line x1="${n1(cx)}" x2="${n1(cx)}" y1="${n1(sy(d, s.p5))}" y2="${n1(sy(d, s.p95))}" stroke="${c}"/>` +
        `<rect x="${n1(x)}" y="${n1(sy(d, s.q3))}" width="${n1(w)}" height="${n1(Math.max(1, sy(d, s.q1) - sy(d, s.q3)))}" fill="${c}" fill-opacity="0.25" stroke="${c}"/>` +
        `<line x1="${n1(x)}" x2="${n1(x + w)}" y1="${n1(sy(d, s.med))}" y2="${n1(sy(d, s.med))}" stroke="${c}" stroke-width="2"/>` +
        `<path d="M${n1(cx)},${n1(sy(d, s.mean) - 4)} l4,4 l-4,4 l-4,-4 z" fill="${c}"/>${outs}</g>`;
    }).join('');
    return boxes + `<text x="${n1(L + gi * gw + gw / 2)}" y="${T + PH + 15}" text-anchor="middle" font-size="11">${esc(g.label)}</text>`;
  }).join('');
  const xAxis = `<line x1="${L}" y1="${T + PH}" x2="${L + PW}" y2="${T + PH}" stroke="#888"/>`;
  return figure(o.title, o.note, marks, yAxis(d, o.yLabel) + xAxis + body + legend(names));
}

export interface BarOpts { title: string; yLabel: string; fixed?: [number, number]; note?: string; categories: string[]; series: { name: string; values: (number | undefined)[] }[] }

/** Grouped bars: one group per category, one bar per series (an iteration or a run). */
export function barChart(o: BarOpts): string {
  const vals = o.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  if (vals.length === 0 || o.categories.length === 0) return empty(o.title, 'no data');
  const d = yDomain(vals, o.fixed, true);
  const gw = PW / o.categories.length;
  const bw = Math.min(28, (gw - 8) / Math.max(1, o.series.length));
  let marks = 0;
  const body = o.categories.map((cat, ci) => {
    const x0 = L + ci * gw + (gw - bw * o.series.length) / 2;
    const bars = o.series.map((s, si) => {
      const v = s.values[ci];
      if (v === undefined || !Number.isFinite(v)) return '';
      marks++;
      const y = sy(d, Math.max(v, 0)), y0 = sy(d, Math.min(v, 0));
      return `<rect x="${n1(x0 + si * bw + 1)}" y="${n1(y)}" width="${n1(bw - 2)}" height="${n1(Math.max(1, y0 - y))}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${cat}, ${s.name}: ${fmt(v)}`)}</title></rect>`;
    }).join('');
    const label = cat.length > 14 ? `${cat.slice(0, 13)}…` : cat;
    return bars + `<text x="${n1(L + ci * gw + gw / 2)}" y="${T + PH + 15}" text-anchor="middle" font-size="10">${esc(label)}<title>${esc(cat)}</title></text>`;
  }).join('');
  const xAxis = `<line x1="${L}" y1="${T + PH}" x2="${L + PW}" y2="${T + PH}" stroke="#888"/>`;
  return figure(o.title, o.note, marks, yAxis(d, o.yLabel) + xAxis + body + legend(o.series.map((s) => s.name)));
}
