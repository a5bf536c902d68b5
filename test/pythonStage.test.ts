// The stage runner on its own: progress events, error classification, stderr tail.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PythonStageError, runPythonStage, type StageEvent } from '../activities/pythonStage';
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
});
