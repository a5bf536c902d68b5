// Which interpreter a stage runs with: the vLLM venv only for the stages that can run vLLM, when they would.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stagePython } from '../activities/pythonStage';

describe('stagePython', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rl-venv-'));
  mkdirSync(path.join(dir, 'bin'));
  const vllm = path.join(dir, 'bin', 'python');
  writeFileSync(vllm, '');
  const main = '/x/.venv/bin/python';

  it('uses the vLLM venv for backend vllm in sample, score and evaluate', () => {
    for (const stage of ['sample', 'score', 'evaluate']) {
      expect(stagePython(stage, { backend: 'vllm' }, main, main, vllm, false)).toBe(vllm);
    }
    expect(stagePython('train', { backend: 'vllm' }, main, main, vllm, true)).toBe(main);
    expect(stagePython('pairs', {}, main, main, vllm, true)).toBe(main);
  });

  it('auto means vLLM only on a GPU machine; hf never', () => {
    expect(stagePython('sample', { backend: 'auto' }, main, main, vllm, true)).toBe(vllm);
    expect(stagePython('sample', {}, main, main, vllm, true)).toBe(vllm);
    expect(stagePython('sample', { backend: 'auto' }, main, main, vllm, false)).toBe(main);
    expect(stagePython('score', { backend: 'hf' }, main, main, vllm, true)).toBe(main);
  });

  it('keeps the main venv when no vLLM venv exists, and a worker-given interpreter always', () => {
    expect(stagePython('sample', { backend: 'vllm' }, main, main, path.join(dir, 'missing', 'python'), true)).toBe(main);
    expect(stagePython('sample', { backend: 'vllm' }, '/opt/py', main, vllm, true)).toBe('/opt/py');
  });
});
