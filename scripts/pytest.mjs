#!/usr/bin/env node
// Runs the Python tests with the project's venv (used by `npm test`).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const py = path.join(process.env.RATIOLOOP_VENV ?? path.join(root, '.venv'), 'bin', 'python');
const env = { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' };
const r = spawnSync(py, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test/python', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env,
});
if (r.status !== 0) process.exit(r.status ?? 1);
// The vLLM tests run where vLLM is: the stages' vLLM venv (`npm run setup -- --with-vllm`; npm test makes it).
const vpy = path.join(process.env.RATIOLOOP_VLLM_VENV ?? path.join(root, '.venv-vllm'), 'bin', 'python');
if (existsSync(vpy) && process.argv.length <= 2) {
  const v = spawnSync(vpy, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test/python/test_vllm.py'], { cwd: root, stdio: 'inherit', env });
  process.exit(v.status ?? 1);
}
process.exit(0);
