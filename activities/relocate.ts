// A run folder that was moved (or is mounted elsewhere) keeps its finished stages. Specs name inputs and manifests
// name outputs by absolute path, so a stage finished at the old place does not match its spec here. It is proven done
// here when its spec, with this run folder's paths put back at the old place, hashes as its manifest says, and every
// output still hashes the same at the new place. The manifest and spec.json are then rewritten for the new place
// (atomically; the old place is kept in the manifest as relocatedFrom), so the next check is the plain one.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { InputRef, StageManifest } from '../workflows/types';
import type { HashOptions } from '../src/contentHash';
import { writeJsonAtomic } from '../src/runStore';
import { manifestProblem, readManifest, specHash } from './manifests';

const under = (p: string, dir: string): boolean => p === dir || p.startsWith(dir + path.sep);
const rebase = (p: string, from: string, to: string): string => (under(p, from) ? path.join(to, path.relative(from, p)) : p);
const rebaseRefs = <R extends InputRef>(refs: Record<string, R>, from: string, to: string): Record<string, R> =>
  Object.fromEntries(Object.entries(refs).map(([k, r]) => [k, { ...r, path: rebase(r.path, from, to) }]));

export interface MovedStage {
  /** The run folder now. */
  runDir: string;
  /** The stage's (or shard's) folder inside it. */
  outputDir: string;
  /** The spec this attempt would run, and its hash. */
  spec: { inputs: Record<string, InputRef>; outputDir: string } & Record<string, unknown>;
  hash: string;
  hashing?: HashOptions;
}

/** The manifest that proves the stage done after its run folder moved, rewritten for the new place; else undefined. */
export async function adoptMovedManifest(s: MovedStage): Promise<StageManifest | undefined> {
  const runDir = path.resolve(s.runDir);
  const outputDir = path.resolve(s.outputDir);
  const manifest = await readManifest(outputDir);
  if (!manifest) return undefined;
  let recorded: { outputDir?: unknown };
  try {
    recorded = JSON.parse(await readFile(path.join(outputDir, 'spec.json'), 'utf8')) as { outputDir?: unknown };
  } catch {
    return undefined; // no spec.json: nothing says where the stage ran
  }
  if (typeof recorded.outputDir !== 'string') return undefined;
  const oldOutputDir = path.resolve(recorded.outputDir);
  const rel = path.relative(runDir, outputDir);
  if (oldOutputDir === outputDir || rel.startsWith('..') || !oldOutputDir.endsWith(path.sep + rel)) return undefined;
  const oldRunDir = oldOutputDir.slice(0, oldOutputDir.length - rel.length - 1);
  const asRecorded = { ...s.spec, inputs: rebaseRefs(s.spec.inputs, runDir, oldRunDir), outputDir: oldOutputDir };
  if (specHash(asRecorded) !== manifest.specHash) return undefined;
  const moved: StageManifest & { relocatedFrom: string } = {
    ...manifest,
    specHash: s.hash,
    inputs: rebaseRefs(manifest.inputs, oldRunDir, runDir),
    outputs: manifest.outputs.map((o) => ({ ...o, path: rebase(o.path, oldRunDir, runDir) })),
    relocatedFrom: oldRunDir,
  };
  if (await manifestProblem(moved, s.hash, s.hashing)) return undefined;
  await writeJsonAtomic(path.join(outputDir, 'spec.json'), { ...s.spec, specHash: s.hash });
  await writeJsonAtomic(path.join(outputDir, 'manifest.json'), moved);
  return moved;
}
