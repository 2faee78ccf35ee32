import { hkdfSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hkdfSha256 } from '../../../src/crypto/hkdf.ts';

describe('hkdfSha256', () => {
  it('equals node:crypto hkdfSync for any key, salt (also empty) and label', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 80 }),
        fc.oneof(fc.constant(new Uint8Array()), fc.uint8Array({ maxLength: 150 })),
        fc.string({ unit: 'binary-ascii', maxLength: 40 }),
        (ikm, salt, info) => {
          const expected = Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));
          expect(hkdfSha256(ikm, salt, info).equals(expected)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('matches RFC 5869 test case 3 (empty salt and info), first 32 bytes', () => {
    const ikm = Buffer.alloc(22, 0x0b);
    expect(hkdfSha256(ikm, new Uint8Array(), '').toString('hex')).toBe(
      '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d',
    );
  });
});
