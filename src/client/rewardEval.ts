// `ratioloop reward-eval`: pairwise accuracy of the configured guided density-ratio reward on preference pairs.
// The config is validated here; scripts/reward_eval.py does the scoring through the same code as the score stage.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { loadConfig } from '../config/load';
import { BUILTIN_GUIDANCE, resolvePlan } from '../config/resolve';
import { projectRoot, pythonPath, scriptsDir } from '../paths';

export async function runRewardEval(opts: { configPath: string; pairs: string; json: boolean; limit?: number }): Promise<number> {
  const config = await loadConfig(opts.configPath);
  const plan = resolvePlan(config, { configPath: opts.configPath, runId: 'reward-eval' });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-reward-eval-'));
  try {
    const cfg = path.join(tmp, 'score.json');
    await writeFile(cfg, JSON.stringify({ ...plan.stagePlans.score.params, seed: plan.seed, guidance_dir: plan.staticInputs.guidance?.path ?? BUILTIN_GUIDANCE }));
    const args = [path.join(scriptsDir, 'reward_eval.py'), '--config-json', cfg, '--pairs', path.resolve(opts.pairs), ...(opts.json ? ['--json'] : []), ...(opts.limit ? ['--limit', String(opts.limit)] : [])];
    const res = await execa(pythonPath(), args, { cwd: projectRoot, stdio: 'inherit', reject: false });
    return res.exitCode ?? 1;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
