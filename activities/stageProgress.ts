// One running stage's live progress, as the activity knows it: its own phase (hashing inputs … verifying), the stage
// program's counts and named steps, the rate of the current count. Each change goes out as a heartbeat (the SDK
// throttles those to the server; remote clients see them) and into the stage folder's progress.json, written at most
// about once a second and always after the last change (local clients see it within seconds).
import type { StageEvent } from './pythonStage';
import type { ShardRef, StageHeartbeat, StageName, StagePhase } from '../workflows/types';
import { writeProgressFile } from '../src/progressFile';

export interface StageProgressOptions {
  stage: StageName;
  iteration: number;
  attempt: number;
  startedAtMs: number;
  /** The shard this attempt runs, for a sharded stage. */
  shard?: ShardRef;
  heartbeat: (beat: StageHeartbeat) => void;
  /** progress.json of the stage folder; absent: heartbeats only. */
  file?: string;
  /** Least time between two writes of the file. */
  fileEveryMs?: number;
  now?: () => number;
}

export class StageProgress {
  private beat: StageHeartbeat;
  /** Where the current count's rate is measured from: its first progress line. */
  private from: { done: number; at: number; total: number; unit: string } | undefined;
  private writing: Promise<void> = Promise.resolve();
  private lastWriteAt = 0;
  private pending: ReturnType<typeof setTimeout> | undefined;
  private dirty = false;
  private closed = false;
  private readonly now: () => number;

  constructor(private readonly o: StageProgressOptions) {
    this.now = o.now ?? Date.now;
    const t = o.startedAtMs;
    this.beat = { stage: o.stage, iteration: o.iteration, attempt: o.attempt, ...(o.shard ? { shard: o.shard } : {}), done: 0, total: 0, unit: '', startedAtMs: t, updatedAtMs: t, phase: 'hashing inputs', phaseStartedAtMs: t };
    this.changed(true);
  }

  get current(): StageHeartbeat {
    return this.beat;
  }

  /** The activity moved on (hashing inputs → checking manifest → running → verifying): counts start afresh. */
  phase(p: StagePhase): void {
    const now = this.now();
    const { step: _s, stepStartedAtMs: _t, rate: _r, ...rest } = this.beat;
    this.beat = { ...rest, phase: p, phaseStartedAtMs: now, done: 0, total: 0, unit: '', updatedAtMs: now };
    this.from = undefined;
    this.changed(true);
  }

  /** A count the activity itself keeps (files hashed). */
  count(done: number, total: number, unit: string): void {
    this.counted(done, total, unit);
    this.changed(false);
  }

  /** A protocol line from the stage program. */
  event(ev: StageEvent): void {
    const now = this.now();
    if (ev.type === 'progress') {
      // Counts are the stage's main work again: the step (a phase with no counts, such as loading) is over.
      const stepEnded = this.beat.step !== undefined;
      this.counted(ev.done, ev.total, ev.unit);
      const { step: _s, stepStartedAtMs: _t, ...rest } = this.beat;
      this.beat = { ...rest, lastLineAtMs: now };
      this.changed(stepEnded);
    } else if (ev.type === 'phase') {
      const { rate: _r, ...rest } = this.beat;
      this.beat = { ...rest, step: ev.name, stepStartedAtMs: now, done: 0, total: 0, unit: '', updatedAtMs: now, lastLineAtMs: now };
      this.from = undefined;
      this.changed(true);
    } else {
      // alive, metric, log: the stage is alive; nothing shown changes, so no heartbeat of its own.
      this.beat = { ...this.beat, lastLineAtMs: now };
      this.dirty = true;
      this.schedule();
    }
  }

  /** Write the last state now and stop writing (the attempt is over). */
  async close(): Promise<void> {
    if (this.pending) clearTimeout(this.pending);
    this.pending = undefined;
    if (this.dirty) this.write();
    this.closed = true;
    await this.writing;
  }

  private counted(done: number, total: number, unit: string): void {
    const now = this.now();
    const f = this.from;
    if (!f || f.total !== total || f.unit !== unit || done < f.done) this.from = { done, at: now, total, unit };
    const g = this.from!;
    const rate = now > g.at && done > g.done ? (done - g.done) / ((now - g.at) / 1000) : undefined;
    const { rate: _r, ...rest } = this.beat;
    this.beat = { ...rest, done, total, unit, updatedAtMs: now, ...(rate !== undefined ? { rate } : {}) };
  }

  private changed(urgent: boolean): void {
    this.o.heartbeat(this.beat);
    this.dirty = true;
    if (urgent && this.pending) {
      clearTimeout(this.pending);
      this.pending = undefined;
    }
    if (urgent) this.write();
    else this.schedule();
  }

  private schedule(): void {
    if (!this.o.file || this.pending || this.closed) return;
    const wait = Math.max(0, this.lastWriteAt + (this.o.fileEveryMs ?? 1_000) - this.now());
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.write();
    }, wait);
    this.pending.unref?.();
  }

  private write(): void {
    const file = this.o.file;
    if (!file || this.closed || !this.dirty) return;
    this.dirty = false;
    this.lastWriteAt = this.now();
    const beat = this.beat;
    // Serialized, so an older state never lands after a newer one; a failed write only costs freshness.
    this.writing = this.writing.then(() => writeProgressFile(file, beat)).catch(() => undefined);
  }
}
