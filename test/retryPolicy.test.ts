// Retry policy fit for preemptible fleets: the options a config resolves to and the Temporal options the workflow uses.
import { describe, expect, it } from 'vitest';
import { formatIssue, validateConfig } from '../src/config/load';
import { resolvePlan } from '../src/config/resolve';
import { CONTROL_ACTIVITY_OPTIONS, NON_RETRYABLE_STAGE_ERRORS, stageActivityOptions } from '../workflows/activityOptions';
import type { RunPlan } from '../workflows/types';

const raw = (timeouts?: unknown): Record<string, unknown> => ({
  models: { policy: { path: 'm' }, strong: { path: 'm' }, weak: { path: 'm', template: 'none' }, judge: { path: 'm' } },
  prompts: { path: 'p.jsonl' },
  ...(timeouts ? { timeouts } : {}),
});

function plan(timeouts?: unknown): RunPlan {
  const { config, issues } = validateConfig(raw(timeouts));
  if (!config) throw new Error(issues.map(formatIssue).join('\n'));
  return resolvePlan(config, { configPath: '/tmp/x/config.yaml', runId: 'r' });
}

describe('stage retry options', () => {
  it('defaults: resumable stages have no attempt cap, 72h in all and 5m between attempts; pairs keeps 3 attempts', () => {
    const p = plan();
    for (const s of ['sample', 'score', 'train', 'evaluate'] as const) {
      expect(p.stagePlans[s].options).toMatchObject({ maximumAttempts: 0, scheduleToCloseTimeout: '72h', maximumInterval: '5m', maxFailures: 3 });
      const o = stageActivityOptions(p, s);
      expect(o.retry?.maximumAttempts).toBeUndefined(); // Temporal: absent = unlimited
      expect(o.scheduleToCloseTimeout).toBe('72h');
      expect(o.retry?.maximumInterval).toBe('5m');
    }
    expect(p.stagePlans.pairs.options).toMatchObject({ maximumAttempts: 3, maximumInterval: '5m' });
    expect(p.stagePlans.pairs.options.scheduleToCloseTimeout).toBeUndefined();
    expect(stageActivityOptions(p, 'pairs')).toMatchObject({ retry: { maximumAttempts: 3 } });
    expect(stageActivityOptions(p, 'pairs').scheduleToCloseTimeout).toBeUndefined();
  });

  it('a stage key beats timeouts.default, which beats the built-in value; null means no cap / no bound', () => {
    const p = plan({ default: { maxAttempts: 5, maximumInterval: '30s' }, train: { maxAttempts: null, scheduleToClose: '7d', maxFailures: 1 }, pairs: { scheduleToClose: '1h' }, score: { scheduleToClose: null } });
    expect(p.stagePlans.sample.options).toMatchObject({ maximumAttempts: 5, scheduleToCloseTimeout: '72h', maximumInterval: '30s' });
    expect(p.stagePlans.train.options).toMatchObject({ maximumAttempts: 0, scheduleToCloseTimeout: '7d', maxFailures: 1 });
    expect(p.stagePlans.pairs.options).toMatchObject({ maximumAttempts: 5, scheduleToCloseTimeout: '1h' });
    expect(p.stagePlans.score.options.scheduleToCloseTimeout).toBeUndefined();
  });

  it('rejects bad retry keys at their key path', () => {
    const issues = validateConfig(raw({ train: { maxAttempts: 0, scheduleToClose: 'soon', maxFailures: -1 } })).issues.map(formatIssue);
    for (const k of ['timeouts.train.maxAttempts', 'timeouts.train.scheduleToClose', 'timeouts.train.maxFailures']) expect(issues.some((m) => m.startsWith(k)), issues.join(' | ')).toBe(true);
  });

  it('a plan recorded before these keys keeps its old policy (3 attempts, no bound)', () => {
    const p = plan();
    p.stagePlans.score.options = { startToCloseTimeout: '24h', heartbeatTimeout: '2m', maximumAttempts: 3, initialInterval: '5s', backoffCoefficient: 2 };
    const o = stageActivityOptions(p, 'score');
    expect(o.retry).toEqual({ maximumAttempts: 3, initialInterval: '5s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_STAGE_ERRORS] });
    expect(o.scheduleToCloseTimeout).toBeUndefined();
  });

  it('bad input and manifest bugs are never retried; bookkeeping is retried without a cap', () => {
    expect(NON_RETRYABLE_STAGE_ERRORS).toEqual(['BadInput', 'ManifestInvalid']);
    const c = CONTROL_ACTIVITY_OPTIONS('q');
    expect(c.retry?.maximumAttempts).toBeUndefined();
    expect(c.retry?.maximumInterval).toBe('1 minute');
    expect(c.scheduleToCloseTimeout).toBeUndefined();
  });
});
