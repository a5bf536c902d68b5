// Run control through the CLI with the embedded (shared) server and no other worker: Ctrl-C leaves the run resumable,
// cancel serves the run itself until the cancellation is recorded, resume completes it; two CLIs share one server.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths';
import { alive } from '../src/sharedServer';
import { baseConfig, fixtureScripts, tmpDir, uniqueQueues } from './helpers';

const bin = path.join(projectRoot, 'bin/ratioloop.js');
const children: ResultPromise[] = [];
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await Promise.allSettled(children);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(stateDir: string, name: string): Promise<{ config: string; runsDir: string }> {
  const dir = await tmpDir(`ratioloop-rc-${name}-`);
  const cfg = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false }, taskQueues: uniqueQueues() };
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, JSON.stringify(cfg)); // JSON is YAML
  return { config, runsDir: path.join(dir, 'runs') };
}

function cli(stateDir: string, fixture: object, ...args: string[]): ResultPromise {
  const env = { ...process.env, TEMPORAL_ADDRESS: '', CI: '1', RATIOLOOP_STATE_DIR: stateDir, RATIOLOOP_SCRIPTS_DIR: fixtureScripts, RATIOLOOP_FIXTURE: JSON.stringify(fixture), RATIOLOOP_SERVER_LINGER_MS: '1000' };
  const c = execa('node', [bin, ...args], { cwd: projectRoot, env, reject: false });
  children.push(c);
  return c;
}

async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(300)) if (await pred()) return;
  throw new Error(`timed out waiting for ${what}`);
}

const text = (f: string) => readFile(f, 'utf8').catch(() => '');
const status = async (runsDir: string, id: string) => (JSON.parse(await text(path.join(runsDir, id, 'run.json'))) as { status: string }).status;
const serverJson = async (stateDir: string) => JSON.parse((await text(path.join(stateDir, 'server.json'))) || '{}') as { supervisorPid?: number; pid?: number; address?: string };

describe('run control with the embedded server', () => {
  it('Ctrl-C leaves the run open; cancel (no other worker) records it; resume completes it', async () => {
    const state = await tmpDir('ratioloop-rc-state-');
    const { config, runsDir } = await setup(state, 'sigint');
    const run = cli(state, { sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rc-sigint', '--no-preflight');
    await waitFor('the sample stage to start', async () => (await text(path.join(runsDir, 'rc-sigint', 'invocations.log'))).includes('sample'));
    const server = await serverJson(state);
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode).toBe(130);
    expect(r.stderr).toContain('stays open and resumable');
    expect(r.stderr).toContain('ratioloop resume rc-sigint');
    // cancel finds nobody serving the control queue, serves it and returns once the cancellation is recorded
    const c = await cli(state, {}, 'cancel', 'rc-sigint', '--runs-dir', runsDir);
    expect(c.exitCode, String(c.stderr)).toBe(0);
    expect(c.stderr).toContain('no worker serves');
    expect(c.stdout).toContain('run rc-sigint cancelled');
    expect(await status(runsDir, 'rc-sigint')).toBe('cancelled');
    const res = await cli(state, {}, 'resume', 'rc-sigint', '--runs-dir', runsDir, '--no-preflight');
    expect(res.exitCode, String(res.stderr)).toBe(0);
    expect(await status(runsDir, 'rc-sigint')).toBe('completed');
    // Ctrl-C never reached the server: one port for the whole sequence (recorded once)
    const port = JSON.parse(await text(path.join(state, 'server-port.json'))) as { port: number };
    expect(server.address).toBe(`127.0.0.1:${port.port}`);
    // the last user gone, the server stops by itself
    await waitFor('the server to stop after its last user', async () => !(await text(path.join(state, 'server.json'))), 20_000);
  }, 120_000);

  it('two CLIs share one server: the first exits while the second run goes on', async () => {
    const state = await tmpDir('ratioloop-rc-state-');
    const a = await setup(state, 'a');
    const b = await setup(state, 'b');
    const first = cli(state, {}, 'run', a.config, '--run-id', 'rc-a', '--no-preflight');
    await waitFor('the first run to start', async () => (await text(path.join(a.runsDir, 'rc-a', 'invocations.log'))).includes('sample'));
    const server = await serverJson(state);
    expect(server.supervisorPid).toBeGreaterThan(0);
    const second = cli(state, { train: { sleep_s: 8 } }, 'run', b.config, '--run-id', 'rc-b', '--no-preflight');
    await waitFor('the second run to start', async () => (await text(path.join(b.runsDir, 'rc-b', 'invocations.log'))).includes('sample'));
    const ra = await first;
    expect(ra.exitCode, String(ra.stderr)).toBe(0);
    expect(await status(b.runsDir, 'rc-b')).toBe('running');
    expect(alive(server.supervisorPid!)).toBe(true);
    const rb = await second;
    expect(rb.exitCode, String(rb.stderr)).toBe(0);
    expect(await status(b.runsDir, 'rc-b')).toBe('completed');
    expect((await serverJson(state)).supervisorPid ?? server.supervisorPid).toBe(server.supervisorPid); // never replaced
    await waitFor('the server to stop after its last user', () => Promise.resolve(!alive(server.supervisorPid!) && !alive(server.pid!)), 20_000);
  }, 120_000);

  it('resume --restart terminates the open execution and starts a new one that completes', async () => {
    const state = await tmpDir('ratioloop-rc-state-');
    const { config, runsDir } = await setup(state, 'restart');
    const run = cli(state, { sample: { sleep_s: 60 } }, 'run', config, '--run-id', 'rc-restart', '--no-preflight');
    await waitFor('the sample stage to start', async () => (await text(path.join(runsDir, 'rc-restart', 'invocations.log'))).includes('sample'));
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode).toBe(130);
    const res = await cli(state, {}, 'resume', 'rc-restart', '--restart', '--runs-dir', runsDir, '--no-preflight');
    expect(res.exitCode, String(res.stderr)).toBe(0);
    expect(res.stdout).toContain('terminated the open execution of and restarted run rc-restart');
    expect(await status(runsDir, 'rc-restart')).toBe('completed');
  }, 90_000);
});
