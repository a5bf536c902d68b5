// Connecting to Temporal: the embedded dev server by default, any cluster or Temporal Cloud through environment settings.
import { readFile } from 'node:fs/promises';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import { NativeConnection, type NativeConnectionOptions } from '@temporalio/worker';
import { SEARCH_ATTRIBUTES } from '../workflows/messages';
import type { Logger } from 'pino';
import Long from 'long';

export interface TemporalSettings {
  address: string;
  namespace: string;
  tls?: { serverName?: string; serverRootCACertificate?: Buffer; clientCertPair?: { crt: Buffer; key: Buffer } } | boolean;
  apiKey?: string;
}

/** Settings from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_TLS_* / TEMPORAL_API_KEY, or undefined for the embedded server. */
export async function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<TemporalSettings | undefined> {
  const address = env.TEMPORAL_ADDRESS;
  if (!address) return undefined;
  const namespace = env.TEMPORAL_NAMESPACE ?? 'default';
  const certPath = env.TEMPORAL_TLS_CERT;
  const keyPath = env.TEMPORAL_TLS_KEY;
  const caPath = env.TEMPORAL_TLS_CA;
  let tls: TemporalSettings['tls'];
  if (certPath || keyPath) {
    if (!certPath || !keyPath) throw new Error('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together');
    tls = {
      clientCertPair: { crt: await readFile(certPath), key: await readFile(keyPath) },
      ...(caPath ? { serverRootCACertificate: await readFile(caPath) } : {}),
      ...(env.TEMPORAL_TLS_SERVER_NAME ? { serverName: env.TEMPORAL_TLS_SERVER_NAME } : {}),
    };
  } else if (env.TEMPORAL_TLS === 'true' || env.TEMPORAL_API_KEY) {
    tls = caPath ? { serverRootCACertificate: await readFile(caPath) } : true;
  }
  return { address, namespace, ...(tls ? { tls } : {}), ...(env.TEMPORAL_API_KEY ? { apiKey: env.TEMPORAL_API_KEY } : {}) };
}

export function clientConnectionOptions(s: TemporalSettings): ConnectionOptions {
  return { address: s.address, ...(s.tls ? { tls: s.tls } : {}), ...(s.apiKey ? { apiKey: s.apiKey } : {}) };
}

export function workerConnectionOptions(s: TemporalSettings): NativeConnectionOptions {
  return { address: s.address, ...(s.tls ? { tls: s.tls } : {}), ...(s.apiKey ? { apiKey: s.apiKey } : {}) };
}

const RETENTION_SECONDS = 30 * 24 * 3600;

/** The part of a client connection prepareNamespace uses (an interface, so tests can play a restricted cluster). */
export type NamespaceServices = Pick<Connection, 'operatorService' | 'workflowService'>;

export interface PrepareOptions {
  /** Raise retention to 30 days: only on the embedded dev server (which keeps 1 day); never on someone's cluster. */
  retention?: boolean;
  log?: Logger;
}

/** Search attributes of ratioloop the namespace lacks; undefined when the cluster does not let us list them. */
async function missingAttributes(conn: NamespaceServices, namespace: string): Promise<string[] | undefined> {
  try {
    const existing = await conn.operatorService.listSearchAttributes({ namespace });
    const have = new Set(Object.keys(existing.customAttributes ?? {}));
    return SEARCH_ATTRIBUTES.filter((a) => !have.has(a.name)).map((a) => a.name);
  } catch {
    return undefined;
  }
}

/**
 * Idempotent server preparation. Registers ratioloop's search attributes where allowed and says whether runs may use
 * them: false (with one warning) where they are missing and cannot be added, so workflows never upsert unregistered
 * attributes (that fails every workflow task); undefined where it cannot be known (start falls back on rejection).
 */
export async function prepareNamespace(conn: NamespaceServices, namespace: string, opts: PrepareOptions = {}): Promise<boolean | undefined> {
  const { log } = opts;
  let missing = await missingAttributes(conn, namespace);
  if (missing && missing.length > 0) {
    try {
      const types = { KEYWORD: 2, INT: 3 } as const; // temporal.api.enums.v1.IndexedValueType
      const add = SEARCH_ATTRIBUTES.filter((a) => missing!.includes(a.name));
      await conn.operatorService.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(add.map((a) => [a.name, types[a.type]])) });
    } catch (e) {
      if (!/already exists/i.test((e as Error).message)) log?.debug({ err: (e as Error).message }, 'could not add search attributes');
    }
    missing = await missingAttributes(conn, namespace);
  }
  let usable: boolean | undefined = missing === undefined ? undefined : missing.length === 0;
  if (missing && missing.length > 0) {
    usable = false;
    warnNoAttributes(log, namespace, missing);
  }
  if (opts.retention) {
    try {
      const ns = await conn.workflowService.describeNamespace({ namespace });
      const current = Number(ns.config?.workflowExecutionRetentionTtl?.seconds ?? 0);
      if (current < RETENTION_SECONDS) {
        await conn.workflowService.updateNamespace({ namespace, config: { workflowExecutionRetentionTtl: { seconds: Long.fromNumber(RETENTION_SECONDS) } } });
      }
    } catch (e) {
      log?.warn({ err: (e as Error).message }, 'could not raise namespace retention (closed runs may vanish from Temporal; run.json keeps the record)');
    }
  }
  return usable;
}

export function warnNoAttributes(log: Logger | undefined, namespace: string, missing: readonly string[]): void {
  const types = Object.fromEntries(SEARCH_ATTRIBUTES.map((a) => [a.name, a.type === 'KEYWORD' ? 'Keyword' : 'Int']));
  const how = missing.map((n) => `temporal operator search-attribute create --namespace ${namespace} --name ${n} --type ${types[n] ?? 'Keyword'}`).join('; ');
  log?.warn(
    `search attributes ${missing.join(', ')} are not registered on namespace ${namespace} and could not be added: runs work without them (status, list and resume use run.json), but cannot be found by attribute in Temporal. To add them, an admin runs: ${how}`,
  );
}

/** Is this start rejected because a search attribute is not registered? (The server's words are in the cause.) */
export function isUnregisteredAttributeError(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    const msg = x instanceof Error ? x.message : typeof x === 'string' ? x : '';
    if (/no mapping defined for search attribute|search attribute .* (is not defined|not found)/i.test(msg)) return true;
  }
  return false;
}

export async function connectClient(s: TemporalSettings): Promise<Connection> {
  return Connection.connect(clientConnectionOptions(s));
}

export async function connectWorker(s: TemporalSettings): Promise<NativeConnection> {
  return NativeConnection.connect(workerConnectionOptions(s));
}
