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

export function liveText(h: StageHeartbeat, now = Date.now()): string {
  // Before the process reports progress the phase says what takes the time (hashing a 16 GB input, verifying outputs).
  const label = h.phase && h.phase !== 'running' ? `${h.phase}: ` : '';
  const since = h.phaseStartedAtMs ?? h.startedAtMs;
  if (!h.total) return `${h.phase && h.phase !== 'running' ? h.phase : 'starting'}… (${fmtDur(now - since)})`;
  const elapsed = Math.max(1, h.updatedAtMs - since) / 1000;
  const rate = h.done / elapsed;
  const eta = rate > 0 ? ((h.total - h.done) / rate) * 1000 : NaN;
  const pct = ((100 * h.done) / h.total).toFixed(0);
  return `${label}${h.done}/${h.total} ${h.unit} (${pct}%) ${rate.toFixed(rate < 10 ? 2 : 0)} ${h.unit}/s${Number.isFinite(eta) ? ` ETA ${fmtDur(eta)}` : ''}`;
}

export function statusLines(st: RunStatus, now = Date.now()): string[] {
  const rec = st.record;
  const lines = [`run ${rec.runId}: ${st.temporal?.status?.toLowerCase() ?? rec.status}`];
  const iterations = rec.plan.iterations;
  for (let k = 1; k <= iterations; k++) {
    for (const stage of rec.plan.stages) {
      const s = rec.stages.find((x) => x.iteration === k && x.stage === stage);
      const live = st.live.find((h) => h.iteration === k && h.stage === stage);
      let detail = '';
      if (s?.status === 'running' && live) detail = liveText(live, now);
      else if (s?.status === 'running' && s.startedAt) detail = `running ${fmtDur(now - Date.parse(s.startedAt))}`;
      else if (s?.status === 'skipped' && s.note) detail = `skipped (${s.note})`;
      else if (s?.status === 'done' || s?.status === 'skipped') detail = `${s.status} in ${fmtDur(s.durationMs ?? 0)}`;
      else if (s?.status === 'failed' || s?.status === 'cancelled') detail = `${s.status}: ${(s.error ?? '').split('\n')[0]}`;
      else detail = s?.status ?? 'pending';
      const tried = st.attempts?.find((x) => x.iteration === k && x.stage === stage);
      if (s?.status === 'running' && tried && tried.attempt > 1) {
        detail += ` (attempt ${tried.attempt}${tried.lastFailure ? `; last failure: ${tried.lastFailure.split('\n')[0]}` : ''})`;
      }
      lines.push(`  iter ${k}  ${stage.padEnd(8)} ${detail}`);
    }
  }
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

export class ProgressView {
  private drawn = 0;
  private lastPlain = new Map<string, string>();
  private lastPlainAt = new Map<string, number>();

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly tty = Boolean(process.stdout.isTTY) && !process.env.CI,
  ) {}

  update(st: RunStatus): void {
    const lines = statusLines(st);
    if (this.tty) {
      if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A`);
      for (const l of lines) this.out.write(`\x1b[2K${l}\n`);
      this.drawn = lines.length;
      return;
    }
    // Plain output: a line when a stage changes phase, and progress lines at most every 10 s per stage.
    const now = Date.now();
    for (const l of lines.slice(1)) {
      const m = /^\s*iter (\d+)\s+(\S+)\s+(.*)$/.exec(l);
      if (!m) continue;
      const key = `${m[1]}:${m[2]}`;
      const phase = (m[3] ?? '').split(/[\s:]/)[0] ?? '';
      const numeric = /^\d+\/\d+$/.test(phase);
      const prev = this.lastPlain.get(key);
      const at = this.lastPlainAt.get(key) ?? 0;
      if (prev === undefined && phase === 'pending') {
        this.lastPlain.set(key, phase);
        continue;
      }
      const changed = numeric ? prev !== 'progress' : prev !== phase;
      if (changed || ((numeric || phase === 'starting…' || phase === 'running') && now - at >= 10_000)) {
        this.out.write(`${new Date(now).toISOString().slice(11, 19)} ${l.trim()}\n`);
        this.lastPlain.set(key, numeric ? 'progress' : phase);
        this.lastPlainAt.set(key, now);
      }
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
