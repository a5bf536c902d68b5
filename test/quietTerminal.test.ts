// A failing stage through the CLI as a user runs it: the terminal gets ratioloop's one line and where the logs are,
// never the SDK's activity failure object; that object is in the SDK log file, whose path is printed once.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, inject, it } from 'vitest';
import { projectRoot } from '../src/paths';
import { baseConfig, fixtureScripts, tmpDir, uniqueQueues } from './helpers';

describe('quiet terminal', () => {
  it('a stage that exits 2 prints one clear line plus its log paths, no SDK internals', async () => {
    const dir = await tmpDir('ratioloop-quiet-');
    const config = { ...(await baseConfig(dir)), iterations: 1, evaluate: { enabled: false }, taskQueues: uniqueQueues() };
    const file = path.join(dir, 'config.json');
    await writeFile(file, JSON.stringify(config));
    const env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      RATIOLOOP_STATE_DIR: path.join(dir, 'state'),
      RATIOLOOP_SCRIPTS_DIR: fixtureScripts,
      RATIOLOOP_FIXTURE: JSON.stringify({ sample: { bad_input: 'prompts.jsonl line 1: no messages' } }),
    };
    const r = await execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), 'run', file, '--run-id', 'quiet-fail', '--no-preflight'], { cwd: projectRoot, reject: false, env });
    const terminal = `${r.stdout}\n${r.stderr}`;
    expect(r.exitCode).toBe(1);
    for (const internal of ['taskToken', 'ApplicationFailure', 'sdkComponent', 'No workflows registered', 'Activity failed', 'node_modules', '    at ']) {
      expect(terminal).not.toContain(internal);
    }
    expect(r.stderr).toContain('run quiet-fail failed: iteration 1 sample: prompts.jsonl line 1: no messages');
    const stageLog = path.join(dir, 'runs', 'quiet-fail', 'iter-1', 'sample', 'logs', 'attempt-1.stderr.log');
    expect(r.stderr).toContain(`  stage log: ${stageLog}`);
    const m = /worker and Temporal SDK logs: (\S+)/.exec(r.stderr);
    expect(m).not.toBeNull();
    const sdkLog = m![1]!;
    expect(path.dirname(sdkLog)).toBe(path.join(dir, 'state', 'logs'));
    expect(r.stderr.split(sdkLog).length - 1).toBe(2); // printed at start, and named again with the failure
    const logged = await readFile(sdkLog, 'utf8');
    expect(logged).toContain('No workflows registered');
    expect(logged).toMatch(/WARN Activity failed[\s\S]*taskToken[\s\S]*prompts\.jsonl line 1: no messages/);
  });
});
