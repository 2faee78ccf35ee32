import { describe, expect, it } from 'vitest';
import { ErrorCode, LetheError, throwIfAborted } from '../../../src/errors/index.ts';

describe('throwIfAborted', () => {
  it('does nothing before the signal fires', () => {
    expect(() => throwIfAborted(new AbortController().signal, 'x')).not.toThrow();
    expect(() => throwIfAborted(undefined, 'x')).not.toThrow();
  });

  it('is ABORTED for a cancel (Ctrl-C, a caller aborting)', () => {
    const c = new AbortController();
    c.abort();
    expect(() => throwIfAborted(c.signal, 'backup')).toThrow(expect.objectContaining({ code: ErrorCode.ABORTED, message: 'backup: cancelled' }) as Error);
  });

  it("is lethe's own reason when lethe stopped the run (a lock whose connection was lost), not a cancel", () => {
    const c = new AbortController();
    const lost = new LetheError(ErrorCode.JOB_LOCKED, 'lost the database connection holding the backup job lock');
    c.abort(lost);
    expect(() => throwIfAborted(c.signal, 'backup')).toThrow(lost);
  });
});
