import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/log/index.ts';

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  return { stream, text: () => chunks.join('') };
}

const IDENTITY = 'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ';

describe('log redaction', () => {
  it('redacts key material, passwords and connection strings by path', () => {
    const out = capture();
    const log = createLogger('info', out.stream);
    log.info(
      {
        password: 'pw-top',
        db: { password: 'pw-nested', url: 'postgres://u:pw-url@h/d' },
        url: 'postgres://u:pw-url2@h/d',
        storage: { secretAccessKey: 'aws-secret' },
        identity: IDENTITY,
        key: { privateKey: 'sign-secret', digestKey: 'mac-secret' },
      },
      'something happened',
    );
    const text = out.text();
    for (const secret of ['pw-top', 'pw-nested', 'pw-url', 'pw-url2', 'aws-secret', IDENTITY, 'sign-secret', 'mac-secret']) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('[redacted]');
    expect(text).toContain('something happened');
  });

  it('scrubs identities and URL passwords out of logged errors', () => {
    const out = capture();
    const log = createLogger('info', out.stream);
    log.error({ err: new Error(`failed with ${IDENTITY} at postgres://lethe:hunter2@db/vault`) }, 'boom');
    const text = out.text();
    expect(text).not.toContain(IDENTITY);
    expect(text).not.toContain('hunter2');
    expect(text).toContain('boom');
  });
});
