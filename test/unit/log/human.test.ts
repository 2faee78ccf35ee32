import { describe, expect, it } from 'vitest';
import { createLogger, humanLogDestination, humanLogLine } from '../../../src/log/index.ts';

/** A logger in the CLI's human mode, and what it wrote. */
function humanLogger(level = 'warn'): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger(level, humanLogDestination((text) => lines.push(text))), lines };
}

describe('human log lines', () => {
  it('writes a warning as one readable line with its fields', () => {
    const { log, lines } = humanLogger();
    log.warn({ abandoned: ['20260101T000000Z-abc'], job: 'backup' }, 'marked interrupted snapshots as abandoned');
    log.info('not at this level');
    expect(lines).toEqual(['lethe: warning: marked interrupted snapshots as abandoned (abandoned=["20260101T000000Z-abc"], job=backup)\n']);
  });

  it('leaves out a record whose fact the command prints from its result', () => {
    const { log, lines } = humanLogger();
    log.warn({ warning: 'superuser', alsoInResult: true }, 'scratch database role has more power than a restore needs');
    expect(lines).toEqual([]);
  });

  it('still redacts secrets (pino redacts before the line is formatted)', () => {
    const { log, lines } = humanLogger();
    log.warn({ url: 'postgres://lethe:hunter2@db/vault', config: { storage: { secretAccessKey: 'AKIAsecret' } } }, 'x');
    expect(lines.join('')).not.toMatch(/hunter2|AKIAsecret/);
    expect(lines.join('')).toContain('url=[redacted]');
  });

  it('keeps the stack of an error logged as an error (a bug report), not of a warning', () => {
    const { log, lines } = humanLogger();
    log.error({ err: new TypeError('boom') }, 'unexpected error');
    log.warn({ err: new Error('soft') }, 'carrying on');
    expect(lines[0]).toMatch(/^lethe: error: unexpected error \(err=TypeError: boom\)\n\s+at /);
    expect(lines[1]).toBe('lethe: warning: carrying on (err=Error: soft)\n');
  });

  it('passes a line that is not JSON through', () => {
    expect(humanLogLine('plain text')).toBe('plain text');
  });
});
