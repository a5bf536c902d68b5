#!/usr/bin/env node
// Runs the Python tests with the project's venv (used by `npm test`).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const py = path.join(process.env.RATIOLOOP_VENV ?? path.join(root, '.venv'), 'bin', 'python');
const r = spawnSync(py, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test/python', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' },
});
process.exit(r.status ?? 1);
