// A stage error as the Temporal failure the workflow sees: its type (what is retried), a message bounded in lines and
// bytes (Temporal rejects payloads over 2 MB, and one long stderr line must not make a failure unreportable), and small
// details naming the host and the attempt log, which keeps the full text.
import os from 'node:os';
import { ApplicationFailure } from '@temporalio/activity';
import { EXIT_BAD_INPUT, EXIT_RESOURCE, EXIT_WORKER_ENV, PythonStageError, StageStalledError } from './pythonStage';

/** A process killed by SIGKILL, as a shell or launcher reports it (torchrun's supervisor exits 128 + signal). */
const EXIT_SIGKILL = 128 + 9;

/** The most a failure message holds, in UTF-8 bytes; the stderr lines in it; one line's characters. */
export const FAILURE_LIMITS = { messageBytes: 16_384, tailLines: 20, headChars: 2_000 } as const;

const utf8 = (s: string): number => Buffer.byteLength(s, 'utf8');

/** The first `max` UTF-8 bytes of s (whole characters), marked when cut. */
export function headBytes(s: string, max: number): string {
  if (utf8(s) <= max) return s;
  const mark = ' … [cut; the attempt log has it all]';
  let out = Buffer.from(s, 'utf8').subarray(0, Math.max(0, max - utf8(mark))).toString('utf8');
  if (out.endsWith('\uFFFD')) out = out.slice(0, -1); // a character split at the cut
  return out + mark;
}

/** The last lines of `lines` that fit in `max` UTF-8 bytes (joined with newlines). */
export function tailBytes(lines: readonly string[], max: number): string {
  const kept: string[] = [];
  let size = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!;
    const add = utf8(line) + (kept.length ? 1 : 0);
    if (size + add > max) {
      if (!kept.length) kept.unshift(headBytes(line, max)); // one huge last line: keep its start
      break;
    }
    kept.unshift(line);
    size += add;
  }
  return kept.join('\n');
}

export interface FailureContext {
  host?: string;
  attemptLog?: string;
}

/** An input path this worker cannot see: the run's inputs were checked when it started, so this host lacks a mount. */
export function inputNotVisible(name: string, p: string, host: string = os.hostname()): ApplicationFailure {
  return ApplicationFailure.create({ message: `input ${name}: ${p} is not visible on host ${host}`, type: 'WorkerEnvironment', details: [{ host }] });
}

export function toFailure(e: unknown, where: FailureContext = {}): ApplicationFailure {
  const host = where.host ?? os.hostname();
  if (e instanceof PythonStageError) {
    const details = [{ exitCode: e.exitCode ?? null, host, ...(where.attemptLog ? { attemptLog: where.attemptLog } : {}) }];
    const head = headBytes(e.message.slice(0, FAILURE_LIMITS.headChars * 4), FAILURE_LIMITS.headChars);
    // Whatever the killed process exited with: the watchdog killed it, so the attempt is retried (a fresh one may not hang).
    if (e instanceof StageStalledError) return ApplicationFailure.create({ message: `${head} (on ${host})`, type: 'StageStalled', details: [{ ...details[0], stall: e.stall }] });
    if (e.exitCode === EXIT_BAD_INPUT) return ApplicationFailure.create({ message: head, type: 'BadInput', nonRetryable: true, details });
    // Retryable, unlike BadInput: the inputs may be fine and another worker able to run the stage. Python names the host.
    if (e.exitCode === EXIT_WORKER_ENV) return ApplicationFailure.create({ message: head.includes(host) ? head : `${head} (on host ${host})`, type: 'WorkerEnvironment', details });
    // Python's own out-of-memory classification (stage.py _is_oom); stageRetry.ts decides: halve the batch once, or fail.
    if (e.exitCode === EXIT_RESOURCE) return ApplicationFailure.create({ message: `out of memory on ${host}: ${head.replace(/^out of memory:\s*/, '')}`, type: 'OutOfMemory', details });
    // Cancels and the stall watchdog are handled above: a SIGKILL here came from outside ratioloop.
    if (e.signal === 'SIGKILL' || e.exitCode === EXIT_SIGKILL) {
      const message = `${head} (on ${host}): killed by SIGKILL, not by a cancel: most likely the kernel's out-of-memory killer (host memory; see \`dmesg\` or \`journalctl -k\` on ${host}), else a job scheduler or an operator`;
      return ApplicationFailure.create({ message, type: 'ResourceExhausted', details });
    }
    const first = `${head} (on ${host})\n--- last stderr lines${where.attemptLog ? ` (all in ${where.attemptLog})` : ''} ---\n`;
    const tail = tailBytes(e.stderrTail.slice(-FAILURE_LIMITS.tailLines), FAILURE_LIMITS.messageBytes - utf8(first));
    return ApplicationFailure.create({ message: first + tail, type: 'StageCrashed', details });
  }
  if (e instanceof ApplicationFailure) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return ApplicationFailure.create({ message: headBytes(msg, FAILURE_LIMITS.messageBytes), type: 'StageError', details: [{ host }] });
}
