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

/** Idempotent server preparation: search attributes registered, retention ≥ 30 days (the dev server keeps 1 day). */
export async function prepareNamespace(conn: Connection, namespace: string, log?: Logger): Promise<void> {
  try {
    const existing = await conn.operatorService.listSearchAttributes({ namespace });
    const have = new Set(Object.keys(existing.customAttributes ?? {}));
    const missing = SEARCH_ATTRIBUTES.filter((a) => !have.has(a.name));
    if (missing.length > 0) {
      const types = { KEYWORD: 2, INT: 3 } as const; // temporal.api.enums.v1.IndexedValueType
      await conn.operatorService.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(missing.map((a) => [a.name, types[a.type]])) });
    }
  } catch (e) {
    if (!/already exists/i.test((e as Error).message)) log?.warn({ err: (e as Error).message }, 'could not register search attributes (runs still work; listing by attribute will not)');
  }
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

export async function connectClient(s: TemporalSettings): Promise<Connection> {
  return Connection.connect(clientConnectionOptions(s));
}

export async function connectWorker(s: TemporalSettings): Promise<NativeConnection> {
  return NativeConnection.connect(workerConnectionOptions(s));
}
