// YAML in, every problem out as "dotted.key.path: what is wrong".
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, type RunConfig } from './schema';

export interface ConfigIssue {
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ConfigIssue[],
  ) {
    super(`${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${issues.map((i) => `  ${formatIssue(i)}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export const formatIssue = (i: ConfigIssue): string => `${i.path || '(top level)'}: ${i.message}`;

const dotted = (path: readonly PropertyKey[]): string => path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');

function flatten(issues: readonly z.core.$ZodIssue[], base: readonly PropertyKey[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) {
    const path = [...base, ...issue.path];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: dotted([...path, key]), message: 'unknown key (check the spelling; `ratioloop schema` lists every key)' });
    } else if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // Report the branch that came closest (fewest problems): that is the one the user meant.
      const best = [...issue.errors].sort((a, b) => a.length - b.length)[0] ?? [];
      out.push(...flatten(best, path));
    } else {
      out.push({ path: dotted(path), message: issue.message });
    }
  }
  return out;
}

/** Validate an already-parsed object. */
export function validateConfig(raw: unknown): { config?: RunConfig; issues: ConfigIssue[] } {
  const res = ConfigSchema.safeParse(raw);
  if (res.success) return { config: res.data, issues: [] };
  const seen = new Set<string>();
  const issues = flatten(res.error.issues).filter((i) => {
    const k = formatIssue(i);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return { issues };
}

/** Read and validate a YAML config; throws ConfigError listing every problem. */
export async function loadConfig(file: string, overrides?: (raw: Record<string, unknown>) => void): Promise<RunConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` }]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({ path: '', message: `YAML syntax: ${e.message.split('\n')[0] ?? e.message}` })));
  }
  const raw: unknown = doc.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(file, [{ path: '', message: 'the config must be a YAML mapping (key: value lines)' }]);
  }
  overrides?.(raw as Record<string, unknown>);
  const { config, issues } = validateConfig(raw);
  if (!config) throw new ConfigError(file, issues);
  return config;
}
