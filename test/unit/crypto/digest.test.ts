import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createCellDigest, generateDigestKey, sha256Hex } from '../../../src/crypto/index.ts';
import { letheError } from './support.ts';

describe('cell digest (HMAC-SHA-256)', () => {
  it('matches an independently computed value (Python hmac)', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    const digest = createCellDigest(key).update(new TextEncoder().encode('lethe cell digest'));
    expect(digest.digest()).toBe(
      '20bbdd75d6de3c7eef11453563d5adbdaf2267972aa8f91e3e55633907a6a23f',
    );
  });

  it('does not depend on how the input is chunked, but on the key', () => {
    const key = generateDigestKey();
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 10 }), (chunks) => {
        const incremental = createCellDigest(key);
        for (const chunk of chunks) incremental.update(chunk);
        const whole = createCellDigest(key).update(Buffer.concat(chunks)).digest();
        expect(incremental.digest()).toBe(whole);
        expect(
          createCellDigest(generateDigestKey()).update(Buffer.concat(chunks)).digest(),
        ).not.toBe(whole);
      }),
    );
  });

  it('makes fresh 32-byte keys and refuses other key sizes with KEY', async () => {
    const a = generateDigestKey();
    expect(a).toHaveLength(32);
    expect(Buffer.from(a).equals(Buffer.from(generateDigestKey()))).toBe(false);
    const err = await letheError(() => createCellDigest(new Uint8Array(16)), ErrorCode.KEY);
    expect(err.message).toMatch(/16 bytes; expected 32/);
  });
});

describe('sha256Hex', () => {
  it('matches the FIPS 180-2 examples', () => {
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(sha256Hex(new Uint8Array())).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });
});
