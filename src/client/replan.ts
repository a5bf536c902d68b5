// Re-planning a run from an edited config (`ratioloop resume RUN_ID --config FILE`): the new plan, what changed (for
// run.json and the user) and the one edit refused because it would make another run under the same id (the seed).
// Which stages really run again is decided by their manifests, as always: a stage whose spec is unchanged is skipped.
import path from 'node:path';
import { canonicalJson } from '../contentHash';
import { configHash, resolvePlan } from '../config/resolve';
import type { RunConfig } from '../config/schema';
import { locatePlan, type ReplanRecord, type RunRecord } from '../runStore';
import type { RunPlan, StageName } from '../../workflows/types';
import { UserError } from './runs';

export interface Replan {
  config: RunConfig;
  configPath: string;
  plan: RunPlan;
  /** What changed; undefined when the edited config equals the recorded one. */
  change?: ReplanRecord;
}

/** Static inputs each stage's spec names (the policy only in iteration 1, where it is the configured model). */
const STATIC_INPUTS: Record<StageName, readonly (keyof RunPlan['staticInputs'])[]> = {
  sample: ['prompts', 'policy'],
  score: ['guidance'],
  pairs: [],
  train: ['policy'],
  evaluate: ['evalData', 'policy'],
};

/** Dotted paths of the leaves that differ between two JSON values (arrays compare whole). */
export function changedKeys(a: unknown, b: unknown, at = ''): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], at ? `${at}.${k}` : k));
  }
  return canonicalJson(a ?? null) === canonicalJson(b ?? null) ? [] : [at || '(top level)'];
}

function stageSpec(plan: RunPlan, stage: StageName): string {
  const inputs = STATIC_INPUTS[stage].map((k) => plan.staticInputs[k]?.path ?? null);
  const baseline = stage === 'evaluate' ? plan.evaluateAgainstBasePolicy : null;
  return canonicalJson({ params: plan.stagePlans[stage].params, inputs, baseline, seed: plan.seed });
}

export interface ReplanOptions {
  configPath: string;
  /** The folder run.json was found in (the run folder may have moved since it last ran). */
  runDir: string;
  /** --iterations, which wins over the config. */
  iterations?: number;
}

/**
 * The plan `config` gives the recorded run. The seed may not change: every stage's spec includes it, so nothing would
 * be kept and the result would be a different run under the same id (start one with `ratioloop run --run-id`).
 * The iteration count is --iterations, else the edited config's if that key changed, else the recorded plan's (which
 * may have come from `run --iterations`).
 */
export function replanRun(rec: RunRecord, config: RunConfig, opts: ReplanOptions): Replan {
  if (config.seed !== rec.plan.seed) {
    throw new UserError(
      `${opts.configPath}: seed ${config.seed} differs from run ${rec.runId}'s seed ${rec.plan.seed}: the seed is part of a run's identity ` +
        `(every stage would run again as a different run). Keep seed: ${rec.plan.seed}, or start a new run: \`ratioloop run ${opts.configPath} --run-id NEW_ID\``,
    );
  }
  const oldIterations = (rec.config as { iterations?: unknown } | undefined)?.iterations;
  const iterations = opts.iterations ?? (config.iterations !== oldIterations ? config.iterations : rec.plan.iterations);
  const fresh = locatePlan(resolvePlan(config, { configPath: opts.configPath, runId: rec.runId, iterations }), opts.runDir);
  // Keep what the record knows about a static input that did not move (e.g. a pinned sha256).
  const staticInputs = { ...fresh.staticInputs };
  for (const [k, ref] of Object.entries(fresh.staticInputs) as [keyof RunPlan['staticInputs'], NonNullable<RunPlan['staticInputs'][keyof RunPlan['staticInputs']]>][]) {
    const old = rec.plan.staticInputs[k];
    if (old && old.path === ref.path) staticInputs[k] = old;
  }
  const plan: RunPlan = { ...fresh, staticInputs };
  const toHash = configHash(config);
  const keys = changedKeys(rec.config, config);
  if (keys.length === 0 && toHash === rec.configHash) return { config, configPath: path.resolve(opts.configPath), plan };
  const changedStages = plan.stages.filter((s) => rec.plan.stages.includes(s) && stageSpec(rec.plan, s) !== stageSpec(plan, s));
  const addedStages = plan.stages.filter((s) => !rec.plan.stages.includes(s));
  const removedStages = rec.plan.stages.filter((s) => !plan.stages.includes(s));
  const change: ReplanRecord = {
    at: new Date().toISOString(),
    configPath: path.resolve(opts.configPath),
    fromConfigHash: rec.configHash,
    toConfigHash: toHash,
    changedKeys: keys,
    changedStages,
    ...(addedStages.length ? { addedStages } : {}),
    ...(removedStages.length ? { removedStages } : {}),
  };
  return { config, configPath: change.configPath, plan, change };
}

/** One line for the terminal: what the edit changed and what that means for the run. */
export function describeReplan(r: Replan): string {
  const c = r.change;
  if (!c) return `${r.configPath}: same config as recorded; resuming with it`;
  const stages = c.changedStages.length ? `stage specs changed: ${c.changedStages.join(', ')}` : 'no stage spec changed';
  const more = [c.addedStages?.length ? `added: ${c.addedStages.join(', ')}` : '', c.removedStages?.length ? `removed: ${c.removedStages.join(', ')}` : ''].filter(Boolean);
  return `re-planned from ${c.configPath}: changed ${c.changedKeys.join(', ')}; ${stages}${more.length ? ` (${more.join('; ')})` : ''}. Finished stages whose spec is unchanged are skipped; later stages run again only if their inputs change`;
}
