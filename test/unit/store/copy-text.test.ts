import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  COPY_NULL,
  copyBytea,
  copyNullableText,
  copyRow,
  copyText,
  copyTimestamp,
} from '../../../src/store/copy-text.ts';

/** Decodes one COPY text field (the subset copyText produces), as the server would. */
function decodeField(field: string): string | null {
  if (field === '\\N') return null;
  const escapes: Record<string, string> = { '\\': '\\', n: '\n', r: '\r', t: '\t' };
  return field.replace(/\\(.)/gs, (_, c: string) => escapes[c] ?? c);
}

describe('copyText', () => {
  it('escapes exactly backslash, newline, carriage return and tab', () => {
    expect(copyText('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(copyText('\\N')).toBe('\\\\N');
    expect(copyText('\\.')).toBe('\\\\.');
    expect(copyText('plain 日本語 🙂')).toBe('plain 日本語 🙂');
    expect(copyText('')).toBe('');
  });

  it('keeps NULL and the text "\\N" apart', () => {
    expect(copyNullableText(null)).toBe(COPY_NULL);
    expect(copyNullableText('\\N')).not.toBe(COPY_NULL);
    expect(decodeField(copyNullableText('\\N'))).toBe('\\N');
  });

  it('round-trips any string and never emits a raw delimiter or line break', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const encoded = copyText(s);
        expect(encoded).not.toMatch(/[\t\n\r]/);
        expect(decodeField(encoded)).toBe(s);
      }),
      { numRuns: 500 },
    );
  });

  it('encodes rows, bytea and timestamps', () => {
    expect(copyRow(['1', 'x', COPY_NULL])).toBe('1\tx\t\\N\n');
    expect(copyBytea(Uint8Array.from([0, 255, 16]))).toBe('\\\\x00ff10');
    expect(copyTimestamp(Date.UTC(2026, 9, 31, 23, 59, 59, 123))).toBe('2026-10-31T23:59:59.123Z');
  });
});
