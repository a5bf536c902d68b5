// The stage runner on its own: progress events, error classification, stderr tail.
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PythonStageError, runPythonStage, TAIL_LINE_CHARS, type StageEvent } from '../activities/pythonStage';
import { stageEnvironment } from '../activities/stageEnv';
import { FAILURE_LIMITS, toFailure } from '../activities/stageFailure';
import { pythonPath, projectRoot } from '../src/paths';
import { tmpDir } from './helpers';

async function script(body: string): Promise<string> {
  const dir = await tmpDir();
  const file = path.join(dir, 'stage.py');
  await writeFile(file, body);
  return file;
}

const run = (file: string, events: StageEvent[] = [], signal?: AbortSignal) =>
  runPythonStage({ python: pythonPath(), script: file, specPath: '/dev/null', cwd: projectRoot, onEvent: (e) => events.push(e), killGraceMs: 1000, ...(signal ? { signal } : {}) });

describe('runPythonStage', () => {
  it('turns stdout JSON lines into events and ignores other stdout', async () => {
    const events: StageEvent[] = [];
    await run(await script('import json\nprint("hello")\nfor i in range(3): print(json.dumps({"type":"progress","done":i+1,"total":3,"unit":"rows"}))\n'), events);
    expect(events.filter((e) => e.type === 'progress').map((e) => (e as { done: number }).done)).toEqual([1, 2, 3]);
  });

  it('exit 2 carries the script error message and code', async () => {
    const err = await run(await script('import sys\nprint("error: prompts.jsonl:7: last message is not a user turn", file=sys.stderr)\nsys.exit(2)\n')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PythonStageError);
    expect((err as PythonStageError).exitCode).toBe(2);
    expect((err as PythonStageError).message).toBe('prompts.jsonl:7: last message is not a user turn');
  });

  it('keeps the last 50 stderr lines, secrets scrubbed', async () => {
    const err = (await run(await script('import sys\nfor i in range(80): print(f"line {i}", file=sys.stderr)\nprint("Authorization: Bearer abcdefghijklmnop", file=sys.stderr)\nsys.exit(1)\n')).catch((e: unknown) => e)) as PythonStageError;
    expect(err.stderrTail).toHaveLength(50);
    expect(err.stderrTail.at(-2)).toBe('line 79');
    expect(err.stderrTail.at(-1)).not.toContain('abcdefghijklmnop');
  });

  it('abort kills a process that ignores SIGTERM (SIGKILL after the grace period)', async () => {
    const ac = new AbortController();
    const events: StageEvent[] = [];
    const p = run(await script('import signal, time, json\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(json.dumps({"type":"progress","done":0,"total":1,"unit":"x"}), flush=True)\ntime.sleep(60)\n'), events, ac.signal);
    while (events.length === 0) await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    ac.abort();
    const err = (await p.catch((e: unknown) => e)) as PythonStageError;
    expect(err.cancelled).toBe(true);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a 3 MB stderr line: the attempt log keeps it whole, the tail and the failure are bounded, details carry no copy', async () => {
    const dir = await tmpDir();
    const logFile = path.join(dir, 'logs', 'attempt-1.stderr.log');
    const file = await script('import sys\nprint("x" * 3_000_000, file=sys.stderr)\nfor i in range(100): print("é" * 3000, file=sys.stderr)\nsys.exit(1)\n');
    const err = (await runPythonStage({ python: pythonPath(), script: file, specPath: '/dev/null', cwd: projectRoot, logFile }).catch((e: unknown) => e)) as PythonStageError;
    expect(err.stderrTail.every((l) => l.length < TAIL_LINE_CHARS + 100)).toBe(true);
    const log = await readFile(logFile, 'utf8');
    expect(log.split('\n')[0]).toHaveLength(3_000_000);
    const failure = toFailure(err, { host: 'gpu-7', attemptLog: logFile });
    expect(failure.type).toBe('StageCrashed');
    expect(Buffer.byteLength(failure.message, 'utf8')).toBeLessThanOrEqual(FAILURE_LIMITS.messageBytes);
    expect(failure.message).toContain('(on gpu-7)');
    expect(failure.message).toContain(logFile);
    expect(JSON.stringify(failure.details)).toBe(JSON.stringify([{ exitCode: 1, host: 'gpu-7', attemptLog: logFile }]));
    // A 3 MB error: line (the message itself) is bounded too.
    const big = toFailure(new PythonStageError('y'.repeat(3_000_000), 2, [], false));
    expect(big.nonRetryable).toBe(true);
    expect(Buffer.byteLength(big.message, 'utf8')).toBeLessThanOrEqual(FAILURE_LIMITS.headChars);
  });

  it('the stage gets no Temporal credentials nor unnamed keys; named key values are scrubbed from the owner-only log', async () => {
    const dir = await tmpDir();
    const logFile = path.join(dir, 'logs', 'attempt-1.stderr.log');
    const base = {
      PATH: process.env.PATH, HOME: process.env.HOME, TOKENIZERS_PARALLELISM: 'false',
      TEMPORAL_API_KEY: 'temporal-key-123456', TEMPORAL_TLS_KEY: '/etc/worker/tls.key', TEMPORAL_ADDRESS: 'temporal:7233',
      JUDGE_KEY: 'judge-secret-value-42', OTHER_API_KEY: 'other-secret-value-7',
    };
    const environment = stageEnvironment(base, { evaluate: { judge: { endpoint: { api_key_env: 'JUDGE_KEY' } } } });
    const file = await script([
      'import os, sys',
      'print("env:", ",".join(sorted(k for k in os.environ if not k.startswith(("PYTHON", "LC_", "RATIOLOOP_")))), file=sys.stderr)',
      'print("calling judge with", os.environ["JUDGE_KEY"], file=sys.stderr)',
      'print("worker key was", "temporal-key-123456", "other", "other-secret-value-7", file=sys.stderr)',
      'sys.exit(1)',
    ].join('\n'));
    const err = (await runPythonStage({ python: pythonPath(), script: file, specPath: '/dev/null', cwd: projectRoot, logFile, environment }).catch((e: unknown) => e)) as PythonStageError;
    expect(err.stderrTail[0]).toBe('env: HOME,JUDGE_KEY,PATH,TOKENIZERS_PARALLELISM');
    const log = await readFile(logFile, 'utf8');
    for (const secret of ['judge-secret-value-42', 'temporal-key-123456', 'other-secret-value-7']) {
      expect(log).not.toContain(secret);
      expect(err.stderrTail.join('\n')).not.toContain(secret);
    }
    expect(log).toContain('calling judge with [redacted]');
    expect((await stat(logFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(logFile))).mode & 0o777).toBe(0o700);
  });

  it('stageEnvironment: which variables a stage keeps, which values are scrubbed', () => {
    const { env, secrets } = stageEnvironment(
      { HF_TOKEN: 'hf_abcdefghijklmnopqrst', TOKENIZERS_PARALLELISM: 'false', CUDA_VISIBLE_DEVICES: '0,1', NCCL_SOCKET_IFNAME: 'eth0',
        ROUTER_KEY: 'router-key-value', AWS_SECRET_ACCESS_KEY: 'aws-secret-value', DB_PASSWORD: 'pw-value-123', TEMPORAL_TLS_CERT: '/etc/tls.crt' },
      { judges: [{ endpoint: { api_key_env: 'ROUTER_KEY' } }] },
    );
    expect(Object.keys(env).sort()).toEqual(['CUDA_VISIBLE_DEVICES', 'HF_TOKEN', 'NCCL_SOCKET_IFNAME', 'ROUTER_KEY', 'TOKENIZERS_PARALLELISM']);
    expect([...secrets].sort()).toEqual(['aws-secret-value', 'hf_abcdefghijklmnopqrst', 'pw-value-123', 'router-key-value']);
  });
});

