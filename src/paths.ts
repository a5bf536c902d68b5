// Where ratioloop's own files live, independent of the caller's working directory.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const stateDir = process.env.RATIOLOOP_STATE_DIR ?? path.join(projectRoot, '.ratioloop');
// RATIOLOOP_SCRIPTS_DIR: stage programs from another folder (the CLI tests run fixture stages through it).
export const scriptsDir = process.env.RATIOLOOP_SCRIPTS_DIR ?? path.join(projectRoot, 'scripts');
export const venvDir = process.env.RATIOLOOP_VENV ?? path.join(projectRoot, '.venv');
export const venvBin = (name: string): string => path.join(venvDir, 'bin', name);
export const pythonPath = (): string => process.env.RATIOLOOP_PYTHON ?? venvBin('python');
