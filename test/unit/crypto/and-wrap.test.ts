import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  andUnwrap,
  andWrap,
  decryptBytes,
  generateKeyPair,
  recipientOf,
  type KeyPair,
} from '../../../src/crypto/index.ts';
import { allMessages, letheError } from './support.ts';

const keyPairs = (min: number, max: number): fc.Arbitrary<KeyPair[]> =>
  fc.integer({ min, max }).map((n) => Array.from({ length: n }, generateKeyPair));

describe('andWrap / andUnwrap', () => {
  it('round-trips an identity through 1 to 4 layers', async () => {
    await fc.assert(
      fc.asyncProperty(keyPairs(1, 4), async (layers) => {
        const cell = generateKeyPair();
        const wrapped = await andWrap(
          cell.identity,
          layers.map((k) => k.recipient),
        );
        const outermostFirst = layers.map((k) => k.identity).reverse();
        const identity = await andUnwrap(wrapped, outermostFirst);
        expect(identity).toBe(cell.identity);
        expect(recipientOf(identity)).toBe(cell.recipient);
      }),
      { numRuns: 25 },
    );
  });

  it('nests plain age files whose innermost plaintext is an age-keygen identity line', async () => {
    const [inner, middle, outer] = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
    const cell = generateKeyPair();
    let data = await andWrap(cell.identity, [inner.recipient, middle.recipient, outer.recipient]);
    for (const key of [outer, middle, inner]) data = await decryptBytes(data, [key.identity]);
    expect(new TextDecoder().decode(data)).toBe(`${cell.identity}\n`);
  });

  it('fails with CRYPTO, naming the layer, when any one key is missing or destroyed', async () => {
    await fc.assert(
      fc.asyncProperty(keyPairs(1, 4), fc.nat(), async (layers, pick) => {
        const cell = generateKeyPair();
        const wrapped = await andWrap(
          cell.identity,
          layers.map((k) => k.recipient),
        );
        const identities = layers.map((k) => k.identity).reverse();
        const destroyed = pick % identities.length;
        identities[destroyed] = generateKeyPair().identity;
        const err = await letheError(() => andUnwrap(wrapped, identities), ErrorCode.CRYPTO);
        expect(err.message).toContain(`layer ${destroyed + 1} of ${layers.length}`);
        expect(err.message).toMatch(/none of the identities given opens it/);
        for (const key of [cell, ...layers]) {
          expect(allMessages(err)).not.toContain(key.identity.slice(16));
        }
      }),
      { numRuns: 20 },
    );
  });

  it('fails with CRYPTO for keys in the wrong order or a wrong layer count', async () => {
    const [a, b] = [generateKeyPair(), generateKeyPair()];
    const cell = generateKeyPair();
    const wrapped = await andWrap(cell.identity, [a.recipient, b.recipient]);
    const swapped = await letheError(
      () => andUnwrap(wrapped, [a.identity, b.identity]),
      ErrorCode.CRYPTO,
    );
    expect(swapped.message).toContain('layer 1 of 2');
    const tooFew = await letheError(() => andUnwrap(wrapped, [b.identity]), ErrorCode.CRYPTO);
    expect(tooFew.message).toMatch(/not an age identity/);
    const tooMany = await letheError(
      () => andUnwrap(wrapped, [b.identity, a.identity, cell.identity]),
      ErrorCode.CRYPTO,
    );
    expect(tooMany.message).toContain('layer 3 of 3');
    for (const err of [swapped, tooFew, tooMany]) {
      expect(allMessages(err)).not.toContain(cell.identity.slice(16));
    }
  });

  it('throws CRYPTO when the wrapped bytes are modified', async () => {
    const [a, b] = [generateKeyPair(), generateKeyPair()];
    const wrapped = await andWrap(generateKeyPair().identity, [a.recipient, b.recipient]);
    wrapped[wrapped.length - 20] = (wrapped[wrapped.length - 20] ?? 0) ^ 0x40;
    await letheError(() => andUnwrap(wrapped, [b.identity, a.identity]), ErrorCode.CRYPTO);
  });

  it('throws KEY for no recipients, no identities, or a malformed identity', async () => {
    const cell = generateKeyPair();
    const none = await letheError(() => andWrap(cell.identity, []), ErrorCode.KEY);
    expect(none.message).toMatch(/at least one recipient/);
    await letheError(() => andUnwrap(new Uint8Array(10), []), ErrorCode.KEY);
    const bad = await letheError(
      () => andWrap(cell.identity.slice(0, -2), [cell.recipient]),
      ErrorCode.KEY,
    );
    expect(allMessages(bad)).not.toContain(cell.identity.slice(16, 60));
  });
});
