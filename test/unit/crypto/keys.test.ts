import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { identityToRecipient } from 'age-encryption';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  FastX25519Identity,
  FastX25519Recipient,
  generateKeyPair,
  recipientOf,
} from '../../../src/crypto/index.ts';
import {
  decodeIdentity,
  decodeRecipient,
  encodeIdentity,
  encodeRecipient,
} from '../../../src/crypto/bech32.ts';
import { allMessages, letheError } from './support.ts';

const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 });

describe('generateKeyPair / recipientOf', () => {
  it('makes age-keygen shaped, matching, fresh key pairs', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    expect(a.identity).toMatch(/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/);
    expect(a.recipient).toMatch(/^age1[02-9ac-hj-np-z]{58}$/);
    expect(recipientOf(a.identity)).toBe(a.recipient);
    expect(new FastX25519Identity(a.identity).recipient).toBe(a.recipient);
    expect(b.identity).not.toBe(a.identity);
    expect(b.recipient).not.toBe(a.recipient);
  });

  it('derives the same recipient as the age library (noble X25519) for any scalar', async () => {
    await fc.assert(
      fc.asyncProperty(key32, async (scalar) => {
        const identity = encodeIdentity(scalar);
        expect(recipientOf(identity)).toBe(await identityToRecipient(identity));
      }),
      { numRuns: 50 },
    );
  });

  it('matches the age v1 spec example key pair (scalar = 32 bytes of 0x42)', () => {
    const identity = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
    expect(decodeIdentity(identity)).toEqual(new Uint8Array(32).fill(0x42));
    expect(encodeIdentity(new Uint8Array(32).fill(0x42))).toBe(identity);
    expect(recipientOf(identity)).toBe(
      'age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj',
    );
  });
});

describe('bech32', () => {
  it('round-trips identities and recipients', () => {
    fc.assert(
      fc.property(key32, (bytes) => {
        expect(decodeIdentity(encodeIdentity(bytes))).toEqual(bytes);
        expect(decodeRecipient(encodeRecipient(bytes))).toEqual(bytes);
      }),
    );
  });

  const { identity, recipient } = generateKeyPair();
  const flipped = identity.slice(0, 30) + (identity[30] === 'Q' ? 'P' : 'Q') + identity.slice(31);
  const badIdentities: readonly [string, string][] = [
    ['empty', ''],
    ['truncated', identity.slice(0, -1)],
    ['bad checksum', flipped],
    ['lowercase', identity.toLowerCase()],
    ['mixed case', identity.slice(0, 40) + identity.slice(40).toLowerCase()],
    ['recipient', recipient],
    ['post-quantum prefix', identity.replace('AGE-SECRET-KEY-1', 'AGE-SECRET-KEY-PQ-1')],
    ['trailing space', `${identity} `],
  ];

  it.each(badIdentities)('rejects a %s identity with KEY, never echoing it', async (_, bad) => {
    const err = await letheError(() => new FastX25519Identity(bad), ErrorCode.KEY);
    expect(err.message).toMatch(/malformed age identity/);
    const secretPart = identity.slice(16, 50);
    expect(allMessages(err)).not.toContain(secretPart);
    expect(allMessages(err).toUpperCase()).not.toContain(secretPart);
    await letheError(() => recipientOf(bad), ErrorCode.KEY);
  });

  it.each([
    ['empty', ''],
    ['truncated', recipient.slice(0, -1)],
    ['uppercase', recipient.toUpperCase()],
    ['identity', identity],
    ['other type', 'age1pq1' + recipient.slice(4)],
  ])('rejects a %s recipient with KEY, naming it', async (_, bad) => {
    const err = await letheError(() => new FastX25519Recipient(bad), ErrorCode.KEY);
    expect(err.message).toContain('is not an age X25519 recipient');
    if (bad.startsWith('age1')) expect(err.message).toContain(`"${bad}"`);
    expect(allMessages(err)).not.toContain(identity.slice(16, 50));
  });
});
