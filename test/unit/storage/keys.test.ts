import { describe, expect, it } from 'vitest';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { assertValidKey, assertValidPrefix, compareKeys } from '../../../src/storage/index.ts';

function rejection(run: () => void): string {
  try {
    run();
  } catch (err) {
    if (isLetheError(err, ErrorCode.STORAGE)) return err.message;
    throw err;
  }
  throw new Error('expected a STORAGE error');
}

describe('assertValidKey', () => {
  it.each([
    'packs/ab/0123456789abcdef',
    'snapshots/2026-03-01T00:00:00Z.json',
    'audit/000000000042.json',
    'vault/2026-03-01.age',
    '.hidden',
    '.lockssmith/x',
    'é/日本/😀',
    `a/${'x'.repeat(200)}`,
  ])('accepts %j', (key) => {
    expect(() => assertValidKey(key)).not.toThrow();
  });

  it.each([
    ['', /is empty/],
    ['/a', /starts with '\/'/],
    ['a/../b', /'\.\.' segment/],
    ['a/./b', /'\.' segment/],
    ['a\\b', /backslash/],
    ['a\tb', /control character/],
    ['a\u0085b', /control character/],
    ['a//b', /empty segment/],
    ['a/', /empty segment/],
    ['.incomplete', /reserved name/],
    ['.locks/a', /reserved name/],
    ['a\udc00', /not valid Unicode/],
    [`a/${'x'.repeat(201)}`, /segment longer than 200 bytes/],
    [Array.from({ length: 6 }, () => 'é'.repeat(100)).join('/'), /longer than 1024 bytes/],
  ])('rejects %j', (key, why) => {
    const message = rejection(() => assertValidKey(key));
    expect(message).toMatch(why);
    expect(message).toContain('invalid object key');
  });
});

describe('assertValidPrefix', () => {
  it.each(['', 'packs/', 'packs/a', '.lock', 'a/b/'])('accepts %j', (prefix) => {
    expect(() => assertValidPrefix(prefix)).not.toThrow();
  });

  it.each(['/a', 'a//', 'a/../', '.locks/', 'a\u0000'])('rejects %j', (prefix) => {
    expect(rejection(() => assertValidPrefix(prefix))).toContain('invalid object prefix');
  });
});

describe('compareKeys', () => {
  it("orders by UTF-8 bytes like S3, not by JavaScript's UTF-16 order", () => {
    const keys = ['b', '\u{1F600}', '\uFF5E', 'a/x', 'a-b', 'A', 'é'];
    // UTF-16 puts the surrogate pair of U+1F600 (0xD83D) before U+FF5E; UTF-8 does not.
    expect([...keys].sort()).toEqual(['A', 'a-b', 'a/x', 'b', 'é', '\u{1F600}', '\uFF5E']);
    expect([...keys].sort(compareKeys)).toEqual([
      'A',
      'a-b',
      'a/x',
      'b',
      'é',
      '\uFF5E',
      '\u{1F600}',
    ]);
  });
});
