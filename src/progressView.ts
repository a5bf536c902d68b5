// Live progress of a run: a redrawn table on a TTY, one plain line per change otherwise; a failure as one line.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { StageHeartbeat } from '../workflows/types';
import type { RunStatus } from './client/runs';
import { stageDirOf } from './runStore';

const fmtDur = (ms: number): string => {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
};

/** A stage that printed no protocol line for this long says so (the stall watchdog acts at its own limit). */
const QUIET_MS = 60_000;

export function liveText(h: StageHeartbeat, now = Date.now()): string {
  // Before the process reports progress the phase says what takes the time (hashing a 16 GB input, verifying outputs);
  // while running, the stage program's own step does (loading a model), and labels the count that follows it.
  const doing = h.phase && h.phase !== 'running' ? h.phase : h.step;
  const quiet = h.lastLineAtMs !== undefined && now - h.lastLineAtMs >= QUIET_MS ? `, no line for ${fmtDur(now - h.lastLineAtMs)}` : '';
  if (!h.total) {
    const since = (doing === h.step ? h.stepStartedAtMs : undefined) ?? h.phaseStartedAtMs ?? h.startedAtMs;
    return `${doing ?? 'starting'}… (${fmtDur(now - since)}${quiet})`;
  }
  // The activity measures the rate from the count's first line (none until a second one: a single line says nothing
  // of speed); older workers (no attempt field) do not, so count from the phase start.
  const rate = h.rate ?? (h.attempt !== undefined ? undefined : h.done / (Math.max(1, h.updatedAtMs - (h.phaseStartedAtMs ?? h.startedAtMs)) / 1000));
  const left = rate && rate > 0 ? Math.max(0, ((h.total - h.done) / rate) * 1000 - (h.rate !== undefined ? Math.max(0, now - h.updatedAtMs) : 0)) : NaN;
  const pct = ((100 * h.done) / h.total).toFixed(0);
  const speed = rate !== undefined ? ` ${rate.toFixed(rate < 10 ? 2 : 0)} ${h.unit}/s` : '';
  const eta = h.done >= h.total ? '' : Number.isFinite(left) ? ` ETA ${fmtDur(left)}` : '';
  const shards = h.shards && h.shards > 1 ? `, ${h.shards} shards` : '';
  const tail = quiet || shards ? ` (${`${shards}${quiet}`.slice(2)})` : '';
  return `${doing ? `${doing}: ` : ''}${h.done}/${h.total} ${h.unit} (${pct}%)${speed}${eta}${tail}`;
}

/** One stage's line in the status table, with what counts as a change for plain output (no clocks, no rates). */
interface StageRow {
  key: string;
  text: string;
  /** The stage's state and what it is doing: a change prints at once in plain output. */
  state: string;
  /** What changes as it goes (counts): printed at most every PLAIN_EVERY_MS. */
  counts: string;
}

function stageRows(st: RunStatus, now: number): StageRow[] {
  const rec = st.record;
  const rows: StageRow[] = [];
  for (let k = 1; k <= rec.plan.iterations; k++) {
    for (const stage of rec.plan.stages) {
      const s = rec.stages.find((x) => x.iteration === k && x.stage === stage);
      const live = st.live.find((h) => h.iteration === k && h.stage === stage);
      let detail = '';
      let state: string = s?.status ?? 'pending';
      let counts = '';
      if (s?.status === 'running' && live) {
        detail = liveText(live, now);
        state = `running|${live.phase ?? ''}|${live.step ?? ''}|${live.unit}|${live.total}`;
        counts = `${live.done}`;
      } else if (s?.status === 'running' && s.startedAt) detail = `running ${fmtDur(now - Date.parse(s.startedAt))}`;
      else if (s?.status === 'skipped' && s.note) detail = `skipped (${s.note})`;
      else if (s?.status === 'done' || s?.status === 'skipped') detail = `${s.status} in ${fmtDur(s.durationMs ?? 0)}`;
      else if (s?.status === 'failed' || s?.status === 'cancelled') detail = `${s.status}: ${(s.error ?? '').split('\n')[0]}`;
      else detail = s?.status ?? 'pending';
      const tried = st.attempts?.find((x) => x.iteration === k && x.stage === stage);
      if (s?.status === 'running' && tried && tried.attempt > 1) {
        detail += ` (attempt ${tried.attempt}${tried.lastFailure ? `; last failure: ${tried.lastFailure.split('\n')[0]}` : ''})`;
        state += `|attempt ${tried.attempt}`;
      }
      rows.push({ key: `${k}:${stage}`, text: `  iter ${k}  ${stage.padEnd(8)} ${detail}`, state, counts });
    }
  }
  return rows;
}

export function statusLines(st: RunStatus, now = Date.now()): string[] {
  const rec = st.record;
  const lines = [`run ${rec.runId}: ${st.temporal?.status?.toLowerCase() ?? rec.status}`];
  lines.push(...stageRows(st, now).map((r) => r.text));
  if (rec.error) lines.push(`  error: ${rec.error.split('\n')[0]}`);
  const open = (st.temporal?.status ?? rec.status).toLowerCase() === 'running';
  const ctl = rec.control;
  if (open && ctl) {
    const pending: string[] = [];
    if (ctl.paused) pending.push('paused (holds before the next stage; ratioloop unpause to go on)');
    const upcoming = ctl.skip.filter((x) => !rec.stages.some((s) => `${s.iteration}:${s.stage}` === x && s.status === 'skipped'));
    if (upcoming.length) pending.push(`skip ${upcoming.map((x) => x.replace(':', ' ')).join(', ')}`);
    if (pending.length) lines.push(`  control: ${pending.join('; ')}`);
  }
  for (const q of st.unserved ?? []) lines.push(`  waiting: no worker is polling queue ${q}`);
  return lines;
}

/** Plain output: counts at most this often per stage; an unchanged running stage is repeated this often (a sign of life in CI logs). */
const PLAIN_EVERY_MS = 10_000;
const PLAIN_ALIVE_MS = 60_000;

/** `s` cut to `width` columns (one column per code point is close enough for status text). */
function fit(s: string, width: number): string {
  const chars = [...s];
  return chars.length <= width ? s : chars.slice(0, Math.max(1, width - 1)).join('') + '…';
}

export class ProgressView {
  private drawn = 0;
  private plain = new Map<string, { state: string; counts: string; at: number }>();

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly tty = Boolean(process.stdout.isTTY) && !process.env.CI,
  ) {}

  update(st: RunStatus, now = Date.now()): void {
    if (this.tty) {
      // Redrawn in place: a line wider than the terminal would wrap and break the cursor arithmetic.
      const width = Math.max(20, (this.out.columns || 80) - 1);
      const lines = statusLines(st, now).map((l) => fit(l, width));
      if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A`);
      for (const l of lines) this.out.write(`\x1b[2K${l}\n`);
      if (lines.length < this.drawn) this.out.write('\x1b[J');
      this.drawn = lines.length;
      return;
    }
    // Plain output: a line when a stage's state or step changes; count changes at most every 10 s per stage.
    for (const r of stageRows(st, now)) {
      const prev = this.plain.get(r.key);
      if (!prev && r.state === 'pending') {
        this.plain.set(r.key, { state: r.state, counts: r.counts, at: 0 });
        continue;
      }
      const running = r.state.startsWith('running');
      const due = !prev || prev.state !== r.state
        || (prev.counts !== r.counts && now - prev.at >= PLAIN_EVERY_MS)
        || (running && now - prev.at >= PLAIN_ALIVE_MS);
      if (!due) continue;
      this.out.write(`${new Date(now).toISOString().slice(11, 19)} ${r.text.trim()}\n`);
      this.plain.set(r.key, { state: r.state, counts: r.counts, at: now });
    }
  }
}

/** The newest `logs/attempt-N.stderr.log` of a stage folder (the stage program's whole stderr), if any. */
export async function lastAttemptLog(stageDir: string): Promise<string | undefined> {
  const names = await readdir(path.join(stageDir, 'logs')).catch(() => [] as string[]);
  const attempts = names.map((n) => /^attempt-(\d+)\.stderr\.log$/.exec(n)).filter((m): m is RegExpExecArray => m !== null);
  const last = attempts.sort((a, b) => Number(b[1]) - Number(a[1]))[0];
  return last ? path.join(stageDir, 'logs', last[0]) : undefined;
}

/**
 * What the terminal says of a failed run: one line (the error's first line, which names the stage's own message), then
 * where the full text is: the failed stage's attempt log and this process's SDK log. Never the SDK's failure object.
 */
export async function failureLines(st: RunStatus, runDir: string, sdkLog?: string): Promise<string[]> {
  const rec = st.record;
  const failed = [...rec.stages].reverse().find((s) => s.status === 'failed');
  const why = (rec.error ?? failed?.error ?? 'see ratioloop status').split('\n')[0]!.trim();
  const where = failed && !/^iteration \d+ /.test(why) ? `iteration ${failed.iteration} ${failed.stage}: ` : '';
  const lines = [`run ${rec.runId} failed: ${where}${why}`];
  const stageLog = failed ? await lastAttemptLog(stageDirOf(runDir, failed.iteration, failed.stage)) : undefined;
  if (stageLog) lines.push(`  stage log: ${stageLog}`);
  if (sdkLog) lines.push(`  worker log: ${sdkLog}`);
  return lines;
}
