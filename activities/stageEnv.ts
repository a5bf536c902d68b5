// The environment a stage process gets, and the secret values its logs must not keep. A stage needs the machine's
// environment (PATH, CUDA_*, NCCL_*, HF_HOME, proxies…) but not the worker's Temporal credentials, nor API keys its
// params do not name: TEMPORAL_* (address, namespace, API key, TLS cert/key/CA paths) and secret-looking variables are
// dropped unless a param `api_key_env` names them (or they are the Hugging Face token, for hub downloads). Every
// secret value, passed or not, is scrubbed from what the stage prints.
import { scrubSecrets } from '../src/log';

const WORKER_ONLY = /^TEMPORAL_/;
const SECRET_NAME = /(^|_)(API_?KEY|SECRET|SECRET_KEY|PASSWORD|PASSWD|TOKEN|CREDENTIALS?)(_|$)/i;
const PASSED = new Set(['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN']);
/** Shorter values are too likely to occur as ordinary text to be scrubbed by value. */
const MIN_SECRET_LEN = 8;

/** Every `api_key_env` named anywhere in a stage's params (judges, router and reward endpoints). */
export function apiKeyEnvNames(params: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(params)) for (const v of params) apiKeyEnvNames(v, out);
  else if (params && typeof params === 'object') {
    for (const [k, v] of Object.entries(params as Record<string, unknown>)) {
      if (k === 'api_key_env' && typeof v === 'string') out.add(v);
      else apiKeyEnvNames(v, out);
    }
  }
  return out;
}

export interface StageEnvironment {
  env: Record<string, string>;
  /** Values to scrub from stored logs and failures: the keys the stage gets and the ones withheld from it. */
  secrets: string[];
}

export function stageEnvironment(base: NodeJS.ProcessEnv, params: unknown): StageEnvironment {
  const named = new Set([...apiKeyEnvNames(params), ...PASSED]);
  const env: Record<string, string> = {};
  const secrets = new Set<string>();
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined) continue;
    const secretLike = SECRET_NAME.test(k);
    if (secretLike || named.has(k)) {
      if (v.length >= MIN_SECRET_LEN && !/^(true|false|\d+)$/i.test(v)) secrets.add(v);
    }
    if (WORKER_ONLY.test(k) || (secretLike && !named.has(k))) continue;
    env[k] = v;
  }
  // Longest first, so a key that contains another is removed whole.
  return { env, secrets: [...secrets].sort((a, b) => b.length - a.length) };
}

/** scrubSecrets (key-like patterns) plus the configured secret values themselves. */
export function scrubValues(text: string, secrets: readonly string[]): string {
  let t = text;
  for (const s of secrets) if (t.includes(s)) t = t.split(s).join('[redacted]');
  return scrubSecrets(t);
}
