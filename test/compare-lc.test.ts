// `ratioloop compare` with AlpacaEval LC: a null lc_win_rate (no df_gamed.csv, so no official LC) is shown as
// unavailable, never as a number or a missing column; a real one gets its ±1.96·lc_se interval.
import { describe, expect, it } from 'vitest';
import { evalScores, LC_UNAVAILABLE, renderCompareTable, type Comparison } from '../src/client/compare';
import { renderHtmlReport } from '../src/client/report';

const row = (iteration: number, m: Record<string, unknown>): Comparison['rows'][number] => ({
  runId: 'r1', iteration, marginByDomain: {}, routedByDomain: {}, eval: evalScores(m), durationsMs: {}, trainCurve: [],
});

describe('AlpacaEval LC in compare', () => {
  it('null LC is unavailable; lc_se is an interval, not a score', () => {
    const none = evalScores({ 'alpaca_eval.win_rate': 12.5, 'alpaca_eval.se': 1.0, 'alpaca_eval.lc_win_rate': null, 'alpaca_eval.lc_se': null });
    expect(none['alpaca_eval.lc_win_rate']!.unavailable).toBe(true);
    expect(Object.keys(none).sort()).toEqual(['alpaca_eval.lc_win_rate', 'alpaca_eval.win_rate']);
    const real = evalScores({ 'alpaca_eval.lc_win_rate': 20, 'alpaca_eval.lc_se': 0.5 });
    expect(real).toEqual({ 'alpaca_eval.lc_win_rate': { value: 20, low: 19.02, high: 20.98 } });
  });

  it('the table says so and the report leaves it off the chart', () => {
    const cmp: Comparison = { runs: [{ runId: 'r1', status: 'completed' }], rows: [row(1, { 'alpaca_eval.lc_win_rate': null }), row(2, { 'alpaca_eval.lc_win_rate': 30, 'alpaca_eval.lc_se': 1 })] };
    const table = renderCompareTable(cmp);
    expect(table).toContain(LC_UNAVAILABLE);
    expect(table).toContain('30.00 [28.04, 31.96]');
    expect(renderHtmlReport(cmp)).not.toContain('NaN');
  });
});
