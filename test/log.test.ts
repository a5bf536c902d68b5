// Secrets never reach logs: pino redaction of known fields and scrubbing of key-like strings in free text.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, scrubSecrets } from '../src/log';

describe('logging', () => {
  it('redacts API keys, tokens and Authorization headers in structured logs', () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _enc, cb) => (lines.push(chunk.toString()), cb()) });
    const log = createLogger({ destination: sink, level: 'info' });
    log.info({ apiKey: 'sk-live-1234567890abcdef', judge: { api_key: 'secret-value-1' }, headers: { authorization: 'Bearer abc.def.ghi' } }, 'calling judge');
    const out = lines.join('');
    expect(out).toContain('calling judge');
    for (const secret of ['sk-live-1234567890abcdef', 'secret-value-1', 'abc.def.ghi']) expect(out).not.toContain(secret);
    expect(out).toContain('[redacted]');
  });

  it('scrubs key-like strings from free text such as stderr tails', () => {
    const text = 'HTTP 401 for key sk-proj-ABCDEFGHIJKLMNOP with header Authorization: Bearer tok_0123456789abcdef, hf_abcdefghijklmnopqrstu';
    const out = scrubSecrets(text);
    expect(out).not.toMatch(/sk-proj-ABCDEFGHIJKLMNOP|tok_0123456789abcdef|hf_abcdefghijklmnopqrstu/);
    expect(out).toContain('HTTP 401');
  });
});
