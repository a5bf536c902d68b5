// THE way a Python stage runs (DESIGN §3). The only code that spawns stage processes: an argument array (no shell),
// its own process group, JSON progress lines from stdout, the stderr tail kept for errors, the whole group killed
// on cancel (SIGTERM, then SIGKILL after a grace period) and swept after exit so no rank outlives its stage; the same
// kill when the stage prints no protocol line for its stall timeout (a hung stage fails retryably as stalled). The
// process gets the worker's environment less its Temporal credentials (stageEnv.ts); what it prints is stored with
// secret values scrubbed, in an owner-only log, and only a bounded tail is kept in memory for the failure.
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { projectRoot } from '../src/paths';
import { scrubValues, stageEnvironment, type StageEnvironment } from './stageEnv';

export type StageEvent =
  | { type: 'progress'; done: number; total: number; unit: string }
  | { type: 'metric'; name: string; value: number; step?: number }
  | { type: 'log'; level: string; msg: string }
  /** A named step with no counts (loading a model); later progress lines start a new count. */
  | { type: 'phase'; name: string }
  /** "Still working": resets the stall watchdog, nothing else. */
  | { type: 'alive' };

export interface PythonStageOptions {
  python: string;
  script: string;
  specPath: string;
  cwd: string;
  /** Extra variables, set over `environment`. */
  env?: Record<string, string>;
  /** The base environment and the secrets to scrub; default: the worker's (stageEnvironment with no params). */
  environment?: StageEnvironment;
  signal?: AbortSignal;
  onEvent?: (e: StageEvent) => void;
  /** Appended with the stage's stderr, for people reading logs after the fact. */
  logFile?: string;
  killGraceMs?: number;
  /** Kill the group and fail as stalled when no protocol line came for this long; 0 or absent: no watchdog. */
  stallTimeoutMs?: number;
}

/** The stages that can run vLLM. */
const VLLM_STAGES = new Set(['sample', 'score', 'evaluate']);
export const vllmPythonPath = (): string =>
  path.join(process.env.RATIOLOOP_VLLM_VENV ?? path.join(projectRoot, '.venv-vllm'), 'bin', 'python');
const gpuMachine = (): boolean => existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/gpus');

/**
 * The interpreter a stage runs with. `npm run setup -- --with-vllm` puts vLLM into a venv of its own (.venv-vllm:
 * vLLM needs older transformers/numpy than the training stage), so a stage that can run vLLM uses that venv when its
 * backend is `vllm`, or `auto` on a GPU machine (where auto means vLLM); every other stage, and any stage when the
 * worker was given its own interpreter (not `defaultPython`), runs with `python`. See docs/operations.md, vLLM.
 */
export function stagePython(stage: string, params: unknown, python: string, defaultPython: string,
  vllmPython: string = vllmPythonPath(), gpu: boolean = gpuMachine()): string {
  if (python !== defaultPython || !VLLM_STAGES.has(stage) || !existsSync(vllmPython)) return python;
  const backend = (params as { backend?: unknown } | null | undefined)?.backend ?? 'auto';
  return backend === 'vllm' || (backend === 'auto' && gpu) ? vllmPython : python;
}

export const EXIT_BAD_INPUT = 2;
export const EXIT_RESOURCE = 3;
/** This worker cannot run it (path not visible here, package not installed here): retried, another worker may. */
export const EXIT_WORKER_ENV = 4;
const TAIL_LINES = 50;
/** A tail line longer than this is cut (the attempt log keeps it whole): one 3 MB line must not become the failure. */
export const TAIL_LINE_CHARS = 1_000;

function capLine(line: string): string {
  return line.length <= TAIL_LINE_CHARS ? line : `${line.slice(0, TAIL_LINE_CHARS)} … [${line.length - TAIL_LINE_CHARS} more characters in the attempt log]`;
}

export class PythonStageError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | undefined,
    readonly stderrTail: string[],
    readonly cancelled: boolean,
    /** The signal that ended the process, when one did (a SIGKILL nobody asked for is likely the kernel's OOM killer). */
    readonly signal?: string,
  ) {
    super(message);
    this.name = 'PythonStageError';
  }
}

/** What the watchdog saw when it gave up: how long the stage was quiet, its last phase and protocol line. */
export interface StallInfo {
  quietMs: number;
  stallTimeoutMs: number;
  lastPhase?: string;
  lastLine?: string;
}

/** The stage printed no protocol line for its stall timeout; its process group was killed. Retryable. */
export class StageStalledError extends PythonStageError {
  constructor(readonly stall: StallInfo, exitCode: number | undefined, stderrTail: string[]) {
    super(stallMessage(stall), exitCode, stderrTail, false);
    this.name = 'StageStalledError';
  }
}

const secs = (ms: number): string => `${Math.round(ms / 1000)} s`;

function stallMessage(s: StallInfo): string {
  const phase = s.lastPhase ? `; last phase: ${s.lastPhase}` : '';
  const line = s.lastLine ? `; last line: ${s.lastLine}` : '; it printed no protocol line';
  return `stalled: no progress or alive line for ${secs(s.quietMs)} (stall timeout ${secs(s.stallTimeoutMs)})${phase}${line}; its process group was killed`;
}

const PROTOCOL = new Set(['progress', 'metric', 'log', 'phase', 'alive']);

function parseEvent(line: string): StageEvent | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const obj = JSON.parse(line) as { type?: unknown };
    if (typeof obj.type === 'string' && PROTOCOL.has(obj.type)) return obj as StageEvent;
  } catch {
    // not a protocol line: ignore
  }
  return undefined;
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // already gone
  }
}

async function waitGroupGone(pgid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!groupAlive(pgid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !groupAlive(pgid);
}

/** Run `python script --spec specPath`; resolves on exit 0, rejects with PythonStageError otherwise. */
export async function runPythonStage(opts: PythonStageOptions): Promise<void> {
  const grace = opts.killGraceMs ?? 10_000;
  if (opts.signal?.aborted) throw new PythonStageError('cancelled before start', undefined, [], true);
  const environment = opts.environment ?? stageEnvironment(process.env, undefined);
  const scrub = (line: string): string => scrubValues(line, environment.secrets);
  let logStream: ReturnType<typeof createWriteStream> | undefined;
  if (opts.logFile) {
    // Owner-only: a stage can print what it should not; scrubbing is by known values and patterns only.
    await mkdir(path.dirname(opts.logFile), { recursive: true, mode: 0o700 });
    await chmod(path.dirname(opts.logFile), 0o700);
    await chmod(opts.logFile, 0o600).catch(() => undefined); // a log from before this rule (a new one is created 0600)
    logStream = createWriteStream(opts.logFile, { flags: 'a', mode: 0o600 });
  }

  const child = execa(opts.python, [opts.script, '--spec', opts.specPath], {
    cwd: opts.cwd,
    env: { ...environment.env, PYTHONUNBUFFERED: '1', RATIOLOOP_WORKER_PID: String(process.pid), ...opts.env },
    extendEnv: false,
    detached: true, // own process group: one kill reaches every rank the stage starts
    stdin: 'ignore',
    buffer: false,
    reject: false,
  });
  const pgid = child.pid;
  if (pgid === undefined) throw new PythonStageError(`could not start ${opts.python}`, undefined, [], false);

  const tail: string[] = [];
  // The watchdog's view: when the last protocol line came, and what it and the last phase were (for the failure).
  let lastLineAt = Date.now();
  let lastLine: string | undefined;
  let lastPhase: string | undefined;
  const stderrDone = new Promise<void>((resolve) => {
    if (!child.stderr) return resolve();
    const rl = createInterface({ input: child.stderr });
    rl.on('line', (line) => {
      const clean = scrub(line);
      tail.push(capLine(clean));
      if (tail.length > TAIL_LINES) tail.shift();
      logStream?.write(clean + '\n');
    });
    rl.on('close', resolve);
  });
  const stdoutDone = new Promise<void>((resolve) => {
    if (!child.stdout) return resolve();
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const ev = parseEvent(line);
      if (ev) {
        lastLineAt = Date.now();
        if (ev.type !== 'alive') lastLine = capLine(scrub(line)).slice(0, 300);
        if (ev.type === 'phase') lastPhase = ev.name;
        opts.onEvent?.(ev);
      } else logStream?.write(`[stdout] ${scrub(line)}\n`);
    });
    rl.on('close', resolve);
  });

  let cancelled = false;
  const onAbort = (): void => {
    cancelled = true;
    killGroup(pgid, 'SIGTERM');
    setTimeout(() => killGroup(pgid, 'SIGKILL'), grace).unref();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  // Heartbeats prove the worker lives, not the stage: a deadlocked collective or a wedged engine prints nothing.
  let stalled: StallInfo | undefined;
  const stallMs = opts.stallTimeoutMs ?? 0;
  const watchdog = stallMs > 0
    ? setInterval(() => {
      const quietMs = Date.now() - lastLineAt;
      if (stalled || cancelled || quietMs < stallMs) return;
      stalled = { quietMs, stallTimeoutMs: stallMs, ...(lastPhase ? { lastPhase } : {}), ...(lastLine ? { lastLine } : {}) };
      logStream?.write(`[ratioloop] ${stallMessage(stalled)}\n`);
      killGroup(pgid, 'SIGTERM');
      setTimeout(() => killGroup(pgid, 'SIGKILL'), grace).unref();
    }, Math.min(1_000, Math.max(50, stallMs / 4)))
    : undefined;
  watchdog?.unref();

  try {
    const result = await child;
    await Promise.all([stdoutDone, stderrDone]);
    // The leader is gone; sweep anything it left in its group (e.g. a rank that ignored SIGTERM).
    if (groupAlive(pgid)) {
      killGroup(pgid, 'SIGTERM');
      if (!(await waitGroupGone(pgid, grace))) killGroup(pgid, 'SIGKILL');
      await waitGroupGone(pgid, 5_000);
    }
    const stderrTail = [...tail];
    if (cancelled) throw new PythonStageError('stage cancelled', result.exitCode, stderrTail, true);
    if (stalled) throw new StageStalledError(stalled, result.exitCode, stderrTail);
    if (result.exitCode === 0) return;
    const lastError = [...stderrTail].reverse().find((l) => l.startsWith('error:'));
    const code = result.exitCode;
    const what = code === undefined ? `killed by ${result.signal ?? 'a signal'}` : `exited with code ${code}`;
    const msg = lastError ? lastError.replace(/^error:\s*/, '') : `${path.basename(opts.script)} ${what}`;
    throw new PythonStageError(msg, code, stderrTail, false, result.signal ?? undefined);
  } finally {
    clearInterval(watchdog);
    opts.signal?.removeEventListener('abort', onAbort);
    await new Promise<void>((r) => (logStream ? logStream.end(r) : r()));
  }
}
