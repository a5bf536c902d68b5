// A size-capped log file: when it passes maxBytes it becomes FILE.1 (the previous FILE.1 is dropped) and a fresh FILE
// starts, so a server that runs for weeks keeps at most about 2 × maxBytes of log.
import { appendFileSync, mkdirSync, renameSync, statSync } from 'node:fs';
import path from 'node:path';

export class RotatingLog {
  private size: number;

  constructor(
    readonly file: string,
    readonly maxBytes = 10 * 1024 * 1024,
  ) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.size = sizeOf(file);
  }

  write(chunk: string | Buffer): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (this.size > 0 && this.size + buf.length > this.maxBytes) {
      renameSync(this.file, `${this.file}.1`);
      this.size = 0;
    }
    // Synchronous: the server logs at warn level, and a line must not be lost when the process exits.
    appendFileSync(this.file, buf);
    this.size += buf.length;
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
