// `runs/<id>/report.html` and `ratioloop compare --html FILE`: the comparison rows plus what the run folders hold
// (src/report/: gather.ts reads, charts.ts draws, html.ts lays out), written atomically as one self-contained file.
import type { Comparison } from './compare';
import { writeFileAtomic } from '../runStore';
import { gatherRun, type RunDetail } from '../report/gather';
import { renderReport } from '../report/html';

export function renderHtmlReport(cmp: Comparison, details: RunDetail[] = []): string {
  return renderReport(cmp, details);
}

/** Reads every compared run's folder; a run whose folder cannot be read still gets its rows, with a note. */
export async function gatherDetails(runsDir: string, cmp: Comparison): Promise<RunDetail[]> {
  const out: RunDetail[] = [];
  for (const r of cmp.runs) {
    try {
      out.push(await gatherRun(runsDir, r.runId));
    } catch (e) {
      out.push({ runId: r.runId, status: r.status, config: undefined, notes: [`run folder not readable: ${(e as Error).message}`], iterations: [] });
    }
  }
  return out;
}

export async function writeHtmlReport(cmp: Comparison, file: string, runsDir?: string): Promise<void> {
  const details = runsDir === undefined ? [] : await gatherDetails(runsDir, cmp);
  await writeFileAtomic(file, renderReport(cmp, details));
}
