// One logger for the CLI, worker and activities: pretty on a TTY, JSON lines otherwise; secrets redacted.
import { pino, type Logger } from 'pino';

export const redactPaths = [
  'apiKey', '*.apiKey', '*.*.apiKey', 'api_key', '*.api_key', '*.*.api_key',
  'token', '*.token', 'password', '*.password',
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization', 'headers.Authorization',
  '*.headers.Authorization', 'Authorization', '*.Authorization',
];

const SECRET_PATTERNS: RegExp[] = [/\b(sk|pk|rk)-[A-Za-z0-9_-]{12,}/g, /(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, /\bhf_[A-Za-z0-9]{16,}/g];

/** Scrub key-like strings from free text (stderr tails, error messages) before it is logged or stored. */
export function scrubSecrets(text: string): string {
  return SECRET_PATTERNS.reduce((t, re) => t.replace(re, (m, p1: unknown) => (typeof p1 === 'string' && /^Bearer/i.test(p1) ? `${p1}[redacted]` : '[redacted]')), text);
}

export function createLogger(opts: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  const pretty = opts.pretty ?? (Boolean(process.stderr.isTTY) && !process.env.CI);
  const level = opts.level ?? process.env.RATIOLOOP_LOG_LEVEL ?? 'info';
  const redact = { paths: redactPaths, censor: '[redacted]' };
  if (opts.destination) return pino({ level, redact }, opts.destination);
  if (pretty) {
    return pino({ level, redact, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname' } } });
  }
  return pino({ level, redact }, pino.destination(2));
}

export const log: Logger = createLogger();
