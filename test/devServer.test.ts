// The shared embedded server's pieces that need no run: the size-capped log, and a worker that never starts its own server.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths';
import { RotatingLog } from '../src/rotatingLog';
import { tmpDir } from './helpers';

describe('embedded server service', () => {
  it('RotatingLog keeps at most two files of about maxBytes each', async () => {
    const dir = await tmpDir('ratioloop-rotlog-');
    const file = path.join(dir, 'logs', 'server.log');
    const log = new RotatingLog(file, 100);
    for (let i = 0; i < 30; i++) log.write(`line ${String(i).padStart(2, '0')} ........\n`); // 20 bytes each
    expect((await stat(file)).size).toBeLessThanOrEqual(100);
    expect((await stat(`${file}.1`)).size).toBeLessThanOrEqual(100);
    expect(await readFile(file, 'utf8')).toContain('line 29');
    expect(await readFile(`${file}.1`, 'utf8')).not.toContain('line 00'); // the oldest were dropped
  });

  it('worker with no server running says how to start one (exit 2); server stop with none is a no-op', async () => {
    const state = await tmpDir('ratioloop-noserver-');
    const env = { TEMPORAL_ADDRESS: '', RATIOLOOP_STATE_DIR: state };
    const w = await execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), 'worker'], { cwd: projectRoot, env, reject: false });
    expect(w.exitCode).toBe(2);
    expect(w.stderr).toContain('no Temporal server is running');
    expect(w.stderr).toContain('ratioloop server');
    const s = await execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), 'server', 'stop'], { cwd: projectRoot, env, reject: false });
    expect(s.exitCode).toBe(0);
    expect(s.stdout).toContain('no Temporal server is running');
  });
});
