// The workflow bundle: built once (webpack) and identified by the sha256 of its code, the build id. Workers run either
// a prebuilt bundle file (`ratioloop bundle`, then `ratioloop worker --bundle FILE`: every machine runs the same code)
// or one built from this checkout at start. The build id goes into run.json and each attempt's worker record, so a
// run's record says which workflow code made each of its decisions.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { writeFileAtomic } from './runStore';

export interface BuiltBundle {
  code: string;
  buildId: string;
}

export const buildIdOf = (code: string): string => `ratioloop-${createHash('sha256').update(code).digest('hex').slice(0, 16)}`;

/** Bundle workflows/index.ts from this checkout (a few seconds). */
export async function buildWorkflowBundle(): Promise<BuiltBundle> {
  const require = createRequire(import.meta.url);
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows/index.ts'), logger: new DefaultLogger('WARN') });
  return { code, buildId: buildIdOf(code) };
}

/** A prebuilt bundle file; its build id is recomputed from its bytes, never trusted from a side file. */
export async function loadWorkflowBundle(file: string): Promise<BuiltBundle> {
  let code: string;
  try {
    code = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the workflow bundle ${file}: ${(e as Error).message} (build one with \`ratioloop bundle --out ${file}\`)`);
  }
  if (!code.includes('alignmentRun')) throw new Error(`${file} is not a ratioloop workflow bundle (no alignmentRun in it)`);
  return { code, buildId: buildIdOf(code) };
}

/** Build the bundle and write it to file (atomically); returns it with its build id. */
export async function writeWorkflowBundle(file: string): Promise<BuiltBundle> {
  const b = await buildWorkflowBundle();
  await writeFileAtomic(file, b.code);
  return b;
}
