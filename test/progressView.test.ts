// Live progress rendering: rate and ETA, and plain (non-TTY) output that prints changes, not every poll.
import { describe, expect, it } from 'vitest';
import { liveText, ProgressView, statusLines } from '../src/progressView';
import type { RunStatus } from '../src/client/runs';
import type { StageHeartbeat } from '../workflows/types';

function status(stageStatus: string, extra: Record<string, unknown> = {}): RunStatus {
  return {
    record: { runId: 'r', status: 'running', plan: { iterations: 1, stages: ['sample', 'score'] }, stages: [{ iteration: 1, stage: 'sample', status: stageStatus, startedAt: new Date().toISOString(), ...extra }] },
    live: [],
  } as unknown as RunStatus;
}

describe('progress', () => {
  it('shows done/total, rate and ETA from a heartbeat', () => {
    const now = 1_000_000;
    expect(liveText({ stage: 'sample', iteration: 1, done: 30, total: 120, unit: 'responses', startedAtMs: now - 10_000, updatedAtMs: now }, now)).toBe('30/120 responses (25%) 3.00 responses/s ETA 30s');
  });

  it('plain output: one line per change, pending stages not printed, repeated polls silent', () => {
    const lines: string[] = [];
    const out = { write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const view = new ProgressView(out, false);
    view.update(status('running'));
    view.update(status('running'));
    const st = status('running');
    st.live.push({ stage: 'sample', iteration: 1, done: 1, total: 4, unit: 'responses', startedAtMs: Date.now() - 1000, updatedAtMs: Date.now() });
    view.update(st);
    view.update(status('done', { durationMs: 4000 }));
    expect(lines.map((l) => l.slice(9).trim())).toEqual([
      expect.stringMatching(/^iter 1  sample   running/),
      expect.stringMatching(/^iter 1  sample   1\/4 responses/),
      'iter 1  sample   done in 4s',
    ]);
  });

  it('status: a retried stage shows its attempt and the last failure; pending control and unserved queues', () => {
    const st = status('running');
    st.attempts = [{ iteration: 1, stage: 'sample', attempt: 2, lastFailure: 'exit code 1\n--- last stderr lines ---' }];
    st.unserved = ['ratioloop-gpu'];
    (st.record as { control?: unknown }).control = { paused: true, iterations: 1, skip: ['1:score'], updatedAt: '' };
    const lines = statusLines(st);
    expect(lines[1]).toMatch(/^ {2}iter 1 {2}sample {3}running \d+s \(attempt 2; last failure: exit code 1\)$/);
    expect(lines).toContain('  control: paused (holds before the next stage; ratioloop unpause to go on); skip 1 score');
    expect(lines).toContain('  waiting: no worker is polling queue ratioloop-gpu');
  });

  it('TTY: redrawn in place, every line cut to the terminal width', () => {
    let text = '';
    const out = { write: (s: string) => ((text += s), true), columns: 40 } as unknown as NodeJS.WriteStream;
    const view = new ProgressView(out, true);
    const st = status('running');
    st.live.push({ stage: 'sample', iteration: 1, done: 3, total: 400, unit: 'responses', startedAtMs: Date.now() - 9000, updatedAtMs: Date.now(), step: 'generating with a very long step name', rate: 1.25 });
    view.update(st);
    view.update(st);
    const lines = text.split('\n').filter(Boolean);
    expect(text).toContain('\x1b[3A'); // the second draw moves up over the first
    for (const l of lines) expect([...l.replace(/\x1b\[\d*[A-Z]/g, '')].length).toBeLessThanOrEqual(39);
    expect(lines[1]).toMatch(/iter 1 {2}sample {3}generating with a v…$/);
  });

  it('plain output: a step change prints at once, count changes at most every 10 s, a quiet running stage once a minute', () => {
    const lines: string[] = [];
    const out = { write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const view = new ProgressView(out, false);
    const t0 = 5_000_000;
    const at = (ms: number, h: Partial<StageHeartbeat>) => {
      const st = status('running');
      st.live.push({ stage: 'sample', iteration: 1, done: 0, total: 0, unit: '', startedAtMs: t0, updatedAtMs: t0 + ms, phase: 'running', ...h });
      view.update(st, t0 + ms);
    };
    at(0, { step: 'loading the policy model', stepStartedAtMs: t0 });
    at(1_000, { step: 'loading the policy model', stepStartedAtMs: t0 }); // only its clock changed
    at(2_000, { done: 1, total: 100, unit: 'responses', rate: 1 }); // a count starts: a change
    for (let s = 3; s <= 25; s++) at(s * 1_000, { done: s, total: 100, unit: 'responses', rate: 1 });
    at(26_000, { done: 26, total: 100, unit: 'responses', rate: 1, step: 'judging' });
    for (let s = 27; s <= 90; s++) at(s * 1_000, { done: 26, total: 100, unit: 'responses', rate: 1, step: 'judging' });
    const shown = lines.map((l) => l.slice(9).trim().replace(/^iter 1 {2}sample {3}/, ''));
    expect(shown.map((l) => l.split(' (')[0])).toEqual([
      'loading the policy model…', '1/100 responses', '12/100 responses', '22/100 responses', 'judging: 26/100 responses', 'judging: 26/100 responses',
    ]);
    expect(lines.at(-1)).toMatch(/^\d\d:\d\d:\d\d iter 1/);
  });
});
