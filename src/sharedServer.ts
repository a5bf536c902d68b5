// The embedded Temporal server as a shared, locked service, one per state folder (.ratioloop/):
//   server.lock       the supervisor's pid: only one server may open temporal.db
//   server-port.json  the port chosen at the first start and kept, so connected workers find it again after a restart
//   server.json       address and pids while it serves (src/devServer.ts)
//   server-users/PID  one file per command using it; the supervisor stops the server when none is left alive
//   logs/server.log   its output, size-capped (src/rotatingLog.ts)
// The supervisor runs detached (its own process group), so Ctrl-C in a terminal reaches the CLI, never the server.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { findRunningServer, freePort, serverInfoFile, startDevServer, type DevServer, type DevServerInfo } from './devServer';
import { projectRoot, stateDir } from './paths';
import { writeJsonAtomic } from './runStore';
import type { TemporalSettings } from './temporal';

const lockFile = (dir: string): string => path.join(dir, 'server.lock');
const portFile = (dir: string): string => path.join(dir, 'server-port.json');
const usersDir = (dir: string): string => path.join(dir, 'server-users');
export const serverLogFile = (dir = stateDir): string => path.join(dir, 'logs', 'server.log');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Take the server lock for this process; a lock left by a dead process is taken over. Returns the live holder's pid otherwise. */
function tryLock(dir: string): number | undefined {
  for (let i = 0; i < 3; i++) {
    try {
      const fd = openSync(lockFile(dir), 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = readPid(lockFile(dir));
      if (holder !== undefined && alive(holder)) return holder;
      rmSync(lockFile(dir), { force: true }); // stale (or half-written by a process that died)
    }
  }
  return readPid(lockFile(dir)) ?? -1;
}

function unlock(dir: string): void {
  if (readPid(lockFile(dir)) === process.pid) rmSync(lockFile(dir), { force: true });
}

/** The commands using the server now; files of processes that died are removed. */
export function liveUsers(dir = stateDir): number[] {
  let names: string[];
  try {
    names = readdirSync(usersDir(dir));
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const n of names) {
    const pid = Number(n);
    if (Number.isInteger(pid) && alive(pid)) out.push(pid);
    else rmSync(path.join(usersDir(dir), n), { force: true });
  }
  return out;
}

/** Register this process as a user (before looking for the server, so a supervisor about to stop sees it). */
function addUser(dir: string, what: string): () => void {
  mkdirSync(usersDir(dir), { recursive: true });
  const file = path.join(usersDir(dir), String(process.pid));
  writeFileSync(file, JSON.stringify({ pid: process.pid, command: what, since: new Date().toISOString() }) + '\n');
  const remove = (): void => rmSync(file, { force: true });
  process.once('exit', remove); // also on process.exit() paths (a second Ctrl-C)
  return () => {
    process.off('exit', remove);
    remove();
  };
}

function recordedPort(dir: string): number | undefined {
  try {
    const p = (JSON.parse(readFileSync(portFile(dir), 'utf8')) as { port?: number }).port;
    return typeof p === 'number' ? p : undefined;
  } catch {
    return undefined;
  }
}

export interface SuperviseOptions {
  dir?: string;
  /** Keep serving with no users (`ratioloop server` in the foreground, stopped by Ctrl-C or `ratioloop server stop`). */
  pinned?: boolean;
  ui?: boolean;
  port?: number;
  uiPort?: number;
  inheritOutput?: boolean;
  log?: Logger;
  /** How long the server waits with no users before it stops (default $RATIOLOOP_SERVER_LINGER_MS, else 3 s). */
  lingerMs?: number;
  /** Called once the server answers. */
  onReady?: (srv: DevServer) => void;
}

/**
 * Run the one server of a state folder until it has no users (or, pinned, until SIGINT/SIGTERM). Returns 'already'
 * without starting anything when another live supervisor holds the lock and serves.
 */
export async function superviseServer(opts: SuperviseOptions = {}): Promise<'stopped' | 'already'> {
  const dir = opts.dir ?? stateDir;
  mkdirSync(dir, { recursive: true });
  // A supervisor that is stopping still holds the lock for a moment: wait for it rather than give up.
  for (const until = Date.now() + 30_000; ; ) {
    const holder = tryLock(dir);
    if (holder === undefined) break;
    if (await findRunningServer(dir)) return 'already';
    if (Date.now() > until) throw new Error(`the server lock ${lockFile(dir)} is held by process ${holder}, which does not serve; stop it (ratioloop server stop) or remove the lock if that process is not ratioloop`);
    await sleep(250);
  }
  let srv: DevServer | undefined;
  let stopRequested = false;
  const onSignal = (): void => {
    stopRequested = true;
    void srv?.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    // The port is chosen once and kept; only if something else took it is another one chosen (and recorded).
    let port = opts.port ?? recordedPort(dir);
    const start = (p: number | undefined): Promise<DevServer> =>
      startDevServer({ dir, logFile: serverLogFile(dir), supervisorPid: process.pid, ...(p ? { port: p } : {}), ...pick(opts) });
    try {
      srv = await start(port);
    } catch (e) {
      if (opts.port !== undefined || port === undefined) throw e;
      opts.log?.warn({ err: (e as Error).message, port }, 'the recorded Temporal port could not be used; choosing another');
      srv = await start((port = await freePort()));
    }
    port = Number(srv.address.split(':').pop());
    if (recordedPort(dir) !== port) await writeJsonAtomic(portFile(dir), { port });
    opts.onReady?.(srv);
    const linger = opts.lingerMs ?? Number(process.env.RATIOLOOP_SERVER_LINGER_MS ?? 3000);
    let emptySince: number | undefined;
    const info: DevServerInfo = { ...srv };
    while (!stopRequested) {
      const r = await Promise.race([srv.exited.then(() => 'exited' as const), sleep(1000)]);
      if (r === 'exited' || stopRequested) break;
      if (opts.pinned || liveUsers(dir).length > 0) {
        emptySince = undefined;
        continue;
      }
      emptySince ??= Date.now();
      if (Date.now() - emptySince < linger) continue;
      // Withdraw server.json first, then look again: a user that registered meanwhile keeps the server.
      rmSync(serverInfoFile(dir), { force: true });
      if (liveUsers(dir).length > 0) {
        await writeJsonAtomic(serverInfoFile(dir), stripFns(info));
        emptySince = undefined;
        continue;
      }
      break;
    }
    await srv.stop();
    return 'stopped';
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await srv?.stop();
    unlock(dir);
  }
}

function pick(o: SuperviseOptions) {
  return { ...(o.ui ? { ui: true } : {}), ...(o.uiPort ? { uiPort: o.uiPort } : {}), ...(o.inheritOutput ? { inheritOutput: true } : {}), ...(o.log ? { log: o.log } : {}) };
}

function stripFns(s: DevServerInfo): DevServerInfo {
  const { address, pid, dbFile, uiUrl, supervisorPid, logFile } = s;
  return { address, pid, dbFile, ...(uiUrl ? { uiUrl } : {}), ...(supervisorPid ? { supervisorPid } : {}), ...(logFile ? { logFile } : {}) };
}

export interface SharedServer {
  info: DevServerInfo;
  /** This command started the server (it stops by itself once no user is left). */
  started: boolean;
  /** Stop using it (the last user's release lets the server stop). */
  release: () => void;
}

/** Use the running server of the state folder, or start its supervisor (detached) and wait until it answers. */
export async function acquireServer(opts: { dir?: string; command?: string; startIfNone?: boolean; readyTimeoutMs?: number } = {}): Promise<SharedServer | undefined> {
  const dir = opts.dir ?? stateDir;
  const release = addUser(dir, opts.command ?? process.argv.slice(2).join(' '));
  try {
    const running = await findRunningServer(dir);
    if (running) return { info: running, started: false, release };
    if (opts.startIfNone === false) {
      release();
      return undefined;
    }
    mkdirSync(path.join(dir, 'logs'), { recursive: true });
    const child = spawn(process.execPath, [path.join(projectRoot, 'bin/ratioloop.js'), 'server', '--shared'], {
      detached: true, // own process group: Ctrl-C in this terminal does not reach the server
      stdio: 'ignore',
      env: { ...process.env, RATIOLOOP_STATE_DIR: dir },
    });
    child.unref();
    let exited = false;
    child.once('exit', () => (exited = true));
    const until = Date.now() + (opts.readyTimeoutMs ?? 90_000);
    while (Date.now() < until) {
      const info = await findRunningServer(dir);
      if (info) return { info, started: info.supervisorPid === child.pid, release };
      // Our supervisor may have found another one starting (it then exits): keep waiting while someone holds the lock.
      const holder = readPid(lockFile(dir));
      if (exited && (holder === undefined || !alive(holder))) break;
      await sleep(300);
    }
    throw new Error(`the embedded Temporal server did not start: see ${serverLogFile(dir)}${await logTail(dir)}`);
  } catch (e) {
    release();
    throw e;
  }
}

async function logTail(dir: string): Promise<string> {
  try {
    const t = (await readFile(serverLogFile(dir), 'utf8')).trim().split('\n').slice(-5).join('\n');
    return t ? `\n${t}` : '';
  } catch {
    return '';
  }
}

/** `ratioloop server stop`: ask the supervisor to stop the server and wait until it has. */
export async function stopSharedServer(dir = stateDir, timeoutMs = 30_000): Promise<DevServerInfo | undefined> {
  let info: DevServerInfo;
  try {
    info = JSON.parse(await readFile(serverInfoFile(dir), 'utf8')) as DevServerInfo;
  } catch {
    const holder = readPid(lockFile(dir));
    if (holder === undefined || !alive(holder)) return undefined;
    info = { address: '?', pid: holder, dbFile: path.join(dir, 'temporal.db'), supervisorPid: holder };
  }
  const pid = info.supervisorPid ?? info.pid;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return undefined;
  }
  for (const until = Date.now() + timeoutMs; Date.now() < until; ) {
    if (!alive(pid) && !alive(info.pid)) return info;
    await sleep(200);
  }
  throw new Error(`the Temporal server (pid ${pid}) did not stop within ${Math.round(timeoutMs / 1000)} s`);
}

export interface TemporalTarget {
  settings: TemporalSettings;
  /** The embedded dev server (ours to configure), not a cluster from TEMPORAL_ADDRESS. */
  embedded: boolean;
  /** This command started the embedded server (nothing else was using it). */
  started?: boolean;
  /** Stop using the embedded server. */
  release?: () => void;
  /** Whether runs may use ratioloop's search attributes here (set once the namespace is prepared; undefined: unknown). */
  searchAttributes?: boolean;
}

/** TEMPORAL_ADDRESS if set; else the embedded server of .ratioloop/ (started if none runs, unless startIfNone is false). */
export async function resolveTemporal(env: TemporalSettings | undefined, opts: { dir?: string; startIfNone?: boolean } = {}): Promise<TemporalTarget | undefined> {
  if (env) return { settings: env, embedded: false };
  const shared = await acquireServer(opts);
  if (!shared) return undefined;
  return { settings: { address: shared.info.address, namespace: 'default' }, embedded: true, started: shared.started, release: shared.release };
}
