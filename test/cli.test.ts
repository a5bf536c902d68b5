// The CLI as a user runs it: exit codes and messages.
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths';
import { buildIdOf, loadWorkflowBundle } from '../src/workflowBundle';

const cli = (...args: string[]) => execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), ...args], { cwd: projectRoot, reject: false, env: { TEMPORAL_ADDRESS: '' } });

describe('ratioloop CLI', () => {
  it('validate: 0 for the embedded default', async () => {
    const r = await cli('validate', 'configs/tiny.yaml');
    expect(r.exitCode).toBe(0);
  });
  it('validate: 2 naming train.beta for a bad config', async () => {
    const r = await cli('validate', 'test/fixtures/configs/bad-beta.yaml');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/train\.beta: /);
  });
  it('validate pre-flights paths: 2 naming each missing one by its key; run stops there too, before any server', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-cli-preflight-'));
    const text = (await readFile(path.join(projectRoot, 'configs/tiny.yaml'), 'utf8'))
      .replace('path: prompts/demo.jsonl', `path: ${path.join(projectRoot, 'configs/prompts/demo-typo.jsonl')}`)
      .replace('weak: { path: ../.ratioloop/models/smollm2-135m-instruct,', `weak: { path: ${path.join(dir, 'no-model')},`)
      .replace(/\.\.\/\.ratioloop/g, path.join(projectRoot, '.ratioloop'));
    const config = path.join(dir, 'config.yaml');
    await writeFile(config, text);
    const r = await cli('validate', config);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`models.weak.path: ${path.join(dir, 'no-model')} does not exist`);
    expect(r.stderr).toMatch(/prompts\.path: .*demo-typo\.jsonl does not exist/);
    expect((await cli('validate', config, '--no-preflight')).exitCode).toBe(0);
    const run = await cli('run', config, '--run-id', 'preflight-typo');
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain('pre-flight failed');
    expect(run.stdout).not.toContain('started run');
  });
  it('resume pre-flights the recorded config: a path removed since the run started is exit 2, before any server', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-cli-resume-'));
    const model = path.join(dir, 'model');
    await mkdir(model);
    await writeFile(path.join(model, 'config.json'), '{}');
    await writeFile(path.join(model, 'chat_template.jinja'), '{{ messages }}');
    const config = { name: 't', runsDir: path.join(dir, 'runs'), models: { policy: { path: model }, strong: { path: model }, weak: { path: model } }, prompts: { path: 'gone.jsonl' }, evaluate: { enabled: false } };
    const runDir = path.join(dir, 'runs', 'gone-prompts');
    await mkdir(runDir, { recursive: true });
    // Only what resume reads before pre-flight: the recorded config, where it came from, and the plan's queues.
    await writeFile(path.join(runDir, 'run.json'), JSON.stringify({ runId: 'gone-prompts', configPath: path.join(dir, 'config.yaml'), config, plan: { queues: {} } }));
    const r = await cli('resume', 'gone-prompts', '--runs-dir', path.join(dir, 'runs'));
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`prompts.path: ${path.join(dir, 'gone.jsonl')} does not exist`);
  });
  it("validate: the paper recipe names its models and unset API keys (never their values); --no-preflight checks the schema only", async () => {
    const hub = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-cli-hub-'));
    const env = { TEMPORAL_ADDRESS: '', HF_HUB_CACHE: hub, OPENAI_API_KEY: '', ROUTER_API_KEY: 'sk-router-secret' };
    const r = await execa('node', [path.join(projectRoot, 'bin/ratioloop.js'), 'validate', 'configs/llama3-8b-gdr-simpo.yaml'], { cwd: projectRoot, reject: false, env });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/models\.policy\.hub: meta-llama\/Meta-Llama-3-8B-Instruct is not in this host's Hugging Face cache/);
    expect(r.stderr).toContain('models.judge.endpoint.api_key_env: the environment variable OPENAI_API_KEY is not set');
    expect(r.stderr).not.toContain('ROUTER_API_KEY');
    expect(r.stderr).not.toContain('sk-router-secret');
    const schemaOnly = await cli('validate', 'configs/llama3-8b-gdr-simpo.yaml', '--no-preflight');
    expect(schemaOnly.exitCode).toBe(0);
    expect(schemaOnly.stdout).toContain('pre-flight skipped');
  });
  it('schema prints JSON Schema', async () => {
    const r = await cli('schema');
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).properties.train).toBeDefined();
  });
  it('rejects a run id with ../ before touching anything', async () => {
    const r = await cli('status', '../x');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('invalid run id');
  });
  it('reward-eval hands the validated config to the scorer and reports accuracy per subset', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-reward-eval-'));
    const pairs = path.join(dir, 'pairs.jsonl');
    const rows = [
      { prompt: 'What is 2+2?', chosen: '2+2 = 4.', rejected: '2+2 = 5.', subset: 'math' },
      { prompt: 'Say hi.', chosen: 'Hi! How can I help you today?', rejected: 'no', subset: 'chat' },
    ];
    await writeFile(pairs, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const r = await cli('reward-eval', '--config', 'configs/tiny.yaml', '--pairs', pairs, '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.reward).toBe('sum');
    expect(out.overall.n).toBe(2);
    expect(Object.keys(out.by_subset).sort()).toEqual(['chat', 'math']);
  });
  it('--iterations cannot exceed the schema maximum (exit 2, before any server is contacted)', async () => {
    const r = await cli('run', 'configs/tiny.yaml', '--iterations', '101');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--iterations must be an integer from 1 to 100');
    const resume = await cli('resume', 'some-run', '--iterations', '0');
    expect(resume.exitCode).toBe(2);
  });
  it("the workflow's iteration maximum is the config schema's", async () => {
    const { configJsonSchema } = await import('../src/config/jsonSchema');
    const { MAX_ITERATIONS } = await import('../workflows/messages');
    expect((configJsonSchema() as { properties: { iterations: { maximum: number } } }).properties.iterations.maximum).toBe(MAX_ITERATIONS);
  });
  it('bundle writes the workflow bundle and prints its build id (the sha256 of the file)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ratioloop-bundle-'));
    const out = path.join(dir, 'wf.js');
    const r = await cli('bundle', '--out', out);
    expect(r.exitCode, r.stderr).toBe(0);
    const code = await readFile(out, 'utf8');
    expect(r.stdout).toContain(`build id ${buildIdOf(code)}`);
    expect((await loadWorkflowBundle(out)).buildId).toBe(buildIdOf(code));
  });
  it('unknown command: usage, exit 2', async () => {
    const r = await cli('frobnicate');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('Usage');
  });
});
