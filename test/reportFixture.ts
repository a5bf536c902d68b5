// A run folder for the report tests, in the real layouts (run.json, iter-<k>/<stage>/manifest.json naming its outputs,
// scores/routes/pairs/metrics/summary/annotations files as the stages write them), filled with small synthetic data.
// Iteration 1 finished; iteration 2 failed in train, so it has score and pairs outputs only. The pairs carry hostile
// text (script tags, attribute breakers) the report must show as text.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeJsonAtomic } from '../src/runStore';

export const HOSTILE = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> & 'quotes' "double"`;
const DOMAINS = ['CHAT', 'SAFETY', 'REASONING'] as const;

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

interface Options {
  runId: string;
  /** Where the manifests say the run folder is (a run folder copied from another machine keeps old absolute paths). */
  recordedRunDir?: string;
  seed?: number;
  beta?: number;
  /** Leave iteration 2 failed in train (the default) or finish it. */
  complete?: boolean;
}

async function stage(runDir: string, recorded: string, k: number, name: string, files: Record<string, string>, outputs: Record<string, string>, metrics: Record<string, unknown>): Promise<void> {
  const dir = path.join(runDir, `iter-${k}`, name);
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), text);
  }
  const outs = Object.entries(outputs).map(([n, rel]) => ({ name: n, path: path.join(recorded, `iter-${k}`, name, rel), sha256: 'f'.repeat(64) }));
  await writeJsonAtomic(path.join(dir, 'manifest.json'), { stage: name, specHash: 'e'.repeat(64), inputs: {}, outputs: outs, metrics, versions: {}, device: 'cpu' });
}

export async function makeReportRun(runsDir: string, o: Options): Promise<string> {
  const runDir = path.join(runsDir, o.runId);
  const recorded = o.recordedRunDir ?? runDir;
  const seed = o.seed ?? 7;
  const iterations = 2;
  const stages: Record<string, unknown>[] = [];
  const rnd = (() => { let s = seed; return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648); })();
  for (let k = 1; k <= iterations; k++) {
    const prompts = Array.from({ length: 12 }, (_, i) => ({ id: `p${String(i).padStart(2, '0')}`, domain: DOMAINS[i % 3]! }));
    const scores = prompts.map((p) => ({ prompt_id: p.id, domain: p.domain, guidance_id: p.domain === 'CHAT' ? null : `g-${p.domain}`, rewards: [0, 1, 2, 3].map(() => Number((rnd() * 10 - 3 + k).toFixed(3))), n_tokens: [10, 12, 14, 16], mean_rewards: [0.1, 0.2, 0.3, 0.4] }));
    scores[0]!.rewards[1] = null as unknown as number; // a response with no reward
    const routes = prompts.map((p) => ({ prompt_id: p.id, label: p.domain, how: 'label' }));
    const score = { prompts: 12, responses: 48, 'router.CHAT': 4, 'router.SAFETY': 4, 'router.REASONING': 4, 'guided.CHAT': 0, 'guided.SAFETY': 4, 'guided.REASONING': 4, 'route_how.label': 12 };
    await stage(runDir, recorded, k, 'score', { 'scores.jsonl': jsonl(scores), 'routes.jsonl': jsonl(routes) }, { scores: 'scores.jsonl', routes: 'routes.jsonl' }, score);
    stages.push({ stage: 'score', iteration: k, queue: 'gpu', status: 'done', durationMs: 2000, metrics: score });

    const pairs = scores.map((s, i) => {
      const rs = s.rewards.filter((x) => x !== null);
      const hi = Math.max(...rs), lo = Math.min(...rs);
      return { prompt: [{ role: 'user', content: i === 1 ? `Tell me ${HOSTILE}` : `Question ${s.prompt_id} about ${s.domain.toLowerCase()}?` }], chosen: [{ role: 'assistant', content: i === 1 ? HOSTILE : `A longer chosen answer ${'x'.repeat(20 + 10 * k + i)}` }], rejected: [{ role: 'assistant', content: `short ${i}` }], score_chosen: hi, score_rejected: lo, margin: hi - lo, prompt_id: s.prompt_id, domain: s.domain };
    });
    const pairsM = { prompts: 12, kept: 12, dropped: 0, margin_mean: 3, margin_by_domain: { CHAT: 2.5, SAFETY: 3.5, REASONING: 3 }, chosen_tokens_mean: 20, rejected_tokens_mean: 8 };
    await stage(runDir, recorded, k, 'pairs', { 'train.jsonl': jsonl(pairs.slice(0, 9)), 'test.jsonl': jsonl(pairs.slice(9)) }, { pairs: 'train.jsonl', pairs_test: 'test.jsonl' }, pairsM);
    stages.push({ stage: 'pairs', iteration: k, queue: 'cpu', status: 'done', durationMs: 100, metrics: pairsM });

    if (k === 2 && !o.complete) {
      stages.push({ stage: 'train', iteration: k, queue: 'gpu', status: 'failed', error: 'BadInput: pairs.jsonl:3: something went wrong', durationMs: 500 });
      // the steps it logged before failing
      await mkdir(path.join(runDir, `iter-${k}`, 'train', 'partial'), { recursive: true });
      await writeFile(path.join(runDir, `iter-${k}`, 'train', 'partial', 'metrics.jsonl'), jsonl([1, 2].map((step) => ({ step, loss: 0.69, 'rewards/accuracies': 0.5, 'rewards/margins': 0 }))));
      break;
    }
    const steps = Array.from({ length: 6 }, (_, i) => ({ step: i + 1, loss: 0.7 - 0.05 * i - 0.02 * k, 'rewards/chosen': -1, 'rewards/rejected': -1.5, 'rewards/accuracies': Math.min(1, 0.5 + 0.08 * i), 'rewards/margins': 0.1 * i - 0.05, learning_rate: 1e-6 }));
    const trainM = { steps: 6, train_pairs: 9, test_pairs: 3, final_loss: steps[5]!.loss, final_preference_accuracy: 0.9, beta: o.beta ?? 2, eval_loss: 0.61, 'eval_rewards/accuracies': 2 / 3, 'eval_rewards/margins': 0.12 };
    await stage(runDir, recorded, k, 'train', { 'metrics.jsonl': jsonl(steps), 'model/config.json': '{}' }, { model: 'model', metrics: 'metrics.jsonl' }, trainM);
    stages.push({ stage: 'train', iteration: k, queue: 'gpu', status: 'done', durationMs: 3000, metrics: trainM });

    const evalM = { 'arena_hard.score': 40 + 5 * k, 'arena_hard.ci_low': 30 + 5 * k, 'arena_hard.ci_high': 52 + 5 * k, 'arena_hard.judge_informative': 0, 'arena_hard.position_consistency': 0, 'alpaca_eval.win_rate': 30 + k, 'alpaca_eval.se': 4, 'alpaca_eval.lc_win_rate': null, 'alpaca_eval.judge_informative': 1, 'mt_bench.score': 5 + 0.2 * k, 'mt_bench.turn1': 5.5, 'mt_bench.judge_informative': 1 };
    const summary = {
      model: 'policy', judge: { type: 'local', name: 'smollm2' },
      benchmarks: {
        arena_hard: { score: evalM['arena_hard.score'], judge: { type: 'local', name: 'smollm2' }, judge_informative: false, judge_stats: { position_consistency: 0, judge_informative: false, uninformative_because: ['position consistency 0.00 is not above chance 0.33'] } },
        alpaca_eval: { win_rate: evalM['alpaca_eval.win_rate'], judge: { type: 'local', name: 'smollm2' }, judge_informative: true, judge_stats: { position_consistency: 0.8, judge_informative: true, uninformative_because: [] } },
        mt_bench: { score: evalM['mt_bench.score'], per_category: { writing: 6, roleplay: 5.5, reasoning: 3 + k, math: 2, coding: 4 }, judge: { type: 'local', name: 'smollm2' }, judge_informative: true, judge_stats: { judge_informative: true, uninformative_because: [] } },
      },
    };
    const annotations = ['helpful_base', 'koala', 'oasst', 'helpful_base'].map((dataset, i) => ({ instruction: `i${i}`, dataset, preference: [1, 2, 0, 1.75][i], output_1: 'ref', output_2: 'ours' }));
    await stage(runDir, recorded, k, 'evaluate', { 'summary.json': JSON.stringify(summary), 'alpaca_eval/ratioloop_smollm2/annotations.json': JSON.stringify(annotations) }, { summary: 'summary.json', alpaca_eval_annotations: 'alpaca_eval/ratioloop_smollm2/annotations.json' }, evalM);
    stages.push({ stage: 'evaluate', iteration: k, queue: 'gpu', status: 'done', durationMs: 4000, metrics: evalM });
  }
  const config = { name: o.runId, seed, iterations, train: { beta: o.beta ?? 2, learning_rate: 1e-6 }, score: { router: { kind: 'label' } } };
  await writeJsonAtomic(path.join(runDir, 'run.json'), {
    runId: o.runId, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:10:00Z', status: o.complete ? 'completed' : 'failed', ...(o.complete ? {} : { error: 'train (iteration 2) failed' }),
    configHash: 'c'.repeat(64), config, plan: { runId: o.runId, iterations, stages: ['score', 'pairs', 'train', 'evaluate'] }, versions: {}, workflowRunIds: [], stages,
  });
  return runDir;
}
