// The Temporal SDK's and workers' own log lines (worker state, "No workflows registered", activity failures with their
// task tokens and stacks, core warnings) go to a file under .ratioloop/logs/, so the terminal keeps ratioloop's lines.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { DefaultLogger, type LogEntry, type LogLevel } from '@temporalio/worker';
import { scrubSecrets } from './log';
import { stateDir } from './paths';

const LEVELS: readonly LogLevel[] = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'];

/** The log file of one CLI process: `.ratioloop/logs/<command>-<UTC time>-<pid>.log` (one per process, never shared). */
export function sdkLogPath(command: string, now = new Date(), dir = path.join(stateDir, 'logs')): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return path.join(dir, `${command}-${stamp}-${process.pid}.log`);
}

/** One entry as text: time, level, message, then its fields in full (errors with their stacks), secrets scrubbed. */
export function formatSdkEntry(entry: LogEntry): string {
  const ms = Number(entry.timestampNanos / 1_000_000n);
  const meta = entry.meta && Object.keys(entry.meta).length ? ' ' + inspect(entry.meta, { depth: 6, colors: false, breakLength: 160 }) : '';
  return scrubSecrets(`${new Date(ms).toISOString()} ${entry.level} ${entry.message}${meta}`) + '\n';
}

export interface SdkFileLogger {
  file: string;
  logger: DefaultLogger;
  close(): void;
}

/**
 * A Temporal logger that appends to `file` (created 0600 in a 0700 folder: entries can name inputs and hosts).
 * Writes are synchronous so nothing is lost when the CLI exits right after a failure. `onError` gets each ERROR
 * entry's message, for the one terminal line a broken worker still deserves.
 */
export function sdkFileLogger(file: string, opts: { level?: LogLevel; onError?: (message: string) => void } = {}): SdkFileLogger {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fd = openSync(file, 'a', 0o600);
  let open = true;
  const requested = (opts.level ?? process.env.TEMPORAL_SDK_LOG_LEVEL ?? 'INFO').toUpperCase() as LogLevel;
  const level = LEVELS.includes(requested) ? requested : 'INFO';
  const logger = new DefaultLogger(level, (entry) => {
    if (open) writeSync(fd, formatSdkEntry(entry));
    if (entry.level === 'ERROR') opts.onError?.(entry.message);
  });
  return {
    file,
    logger,
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
