import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { base64nopad } from '@scure/base';
import { Decrypter, Encrypter, Stanza } from 'age-encryption';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  decryptBytes,
  encryptBytes,
  FastX25519Identity,
  FastX25519Recipient,
  generateKeyPair,
} from '../../../src/crypto/index.ts';
import { AgeFailure, AgeProblem, ageProblemOf } from '../../../src/crypto/age-errors.ts';
import { encryptTo } from '../../../src/crypto/age.ts';
import { encodeRecipient } from '../../../src/crypto/bech32.ts';
import { letheError } from './support.ts';

const alice = generateKeyPair();
const bob = generateKeyPair();

describe('FastX25519Recipient.wrapFileKey', () => {
  it('writes one age v1 X25519 stanza with a fresh ephemeral share', () => {
    const recipient = new FastX25519Recipient(alice.recipient);
    const fileKey = randomBytes(16);
    const [first, ...rest] = recipient.wrapFileKey(fileKey);
    const [second] = recipient.wrapFileKey(fileKey);
    expect(rest).toHaveLength(0);
    expect(first?.args).toHaveLength(2);
    expect(first?.args[0]).toBe('X25519');
    expect(first?.args[1]).toMatch(/^[A-Za-z0-9+/]{43}$/);
    expect(base64nopad.decode(first?.args[1] ?? '')).toHaveLength(32);
    expect(first?.body).toHaveLength(32);
    expect(second?.args[1]).not.toBe(first?.args[1]);
    expect(Buffer.from(second?.body ?? [])).not.toEqual(Buffer.from(first?.body ?? []));
  });

  it('is opened by the matching identity only', () => {
    const fileKey = new Uint8Array(randomBytes(16));
    const stanzas = new FastX25519Recipient(alice.recipient).wrapFileKey(fileKey);
    expect(new FastX25519Identity(alice.identity).unwrapFileKey(stanzas)).toEqual(fileKey);
    expect(new FastX25519Identity(bob.identity).unwrapFileKey(stanzas)).toBeNull();
  });

  it('refuses a low-order recipient with KEY', async () => {
    const lowOrder = encodeRecipient(new Uint8Array(32));
    const recipient = new FastX25519Recipient(lowOrder);
    const err = await letheError(() => recipient.wrapFileKey(randomBytes(16)), ErrorCode.KEY);
    expect(err.message).toContain('low-order');
  });
});

describe('FastX25519Identity.unwrapFileKey', () => {
  const identity = new FastX25519Identity(alice.identity);
  const fileKey = new Uint8Array(randomBytes(16));
  const [good] = new FastX25519Recipient(alice.recipient).wrapFileKey(fileKey);
  const [forBob] = new FastX25519Recipient(bob.recipient).wrapFileKey(fileKey);
  if (good === undefined || forBob === undefined) throw new Error('no stanza');
  const share = good.args[1] ?? '';

  it('skips stanzas of other types and other keys, and finds its own', () => {
    const other = new Stanza(['scrypt', 'c2FsdA', '10'], new Uint8Array(32));
    expect(identity.unwrapFileKey([other, forBob])).toBeNull();
    expect(identity.unwrapFileKey([other, forBob, good])).toEqual(fileKey);
  });

  it.each([
    ['an extra argument', new Stanza(['X25519', share, 'extra'], good.body), /wrong number/],
    ['no share', new Stanza(['X25519'], good.body), /wrong number/],
    ['a short share', new Stanza(['X25519', share.slice(0, 42)], good.body), /share/],
    ['a padded share', new Stanza(['X25519', `${share}=`], good.body), /share/],
    ['a short body', new Stanza(['X25519', share], good.body.subarray(0, 31)), /body has 31/],
    [
      'a low-order share',
      new Stanza(['X25519', base64nopad.encode(new Uint8Array(32))], good.body),
      /low-order/,
    ],
  ])('refuses a stanza with %s as a malformed header', async (_, stanza, why) => {
    let thrown: unknown;
    try {
      identity.unwrapFileKey([stanza]);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(AgeFailure);
    expect((thrown as AgeFailure).problem).toBe(AgeProblem.MALFORMED);
    expect((thrown as AgeFailure).message).toMatch(why);
    // And the readers report it as CRYPTO, naming the problem.
    const file = encryptTo(new Uint8Array(1), [{ wrapFileKey: () => [stanza] }]);
    const err = await letheError(() => decryptBytes(file, [alice.identity]), ErrorCode.CRYPTO);
    expect(err.message).toMatch(why);
    expect(ageProblemOf(err)).toBe(AgeProblem.MALFORMED);
  });
});

describe('interop with the age library’s own X25519 (noble)', () => {
  it('library-encrypted files open with FastX25519Identity, and vice versa', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2000 }), async (plain) => {
        const library = new Encrypter();
        library.addRecipient(alice.recipient);
        expect(await decryptBytes(await library.encrypt(plain), [alice.identity])).toEqual(plain);

        const decrypter = new Decrypter();
        decrypter.addIdentity(alice.identity);
        expect(await decrypter.decrypt(await encryptBytes(plain, [alice.recipient]))).toEqual(
          plain,
        );
      }),
      { numRuns: 20 },
    );
  });

  it('mixes Fast and library recipients in one file', async () => {
    const encrypter = new Encrypter();
    encrypter.addRecipient(new FastX25519Recipient(alice.recipient));
    encrypter.addRecipient(bob.recipient);
    const cipher = await encrypter.encrypt('both');
    const decrypter = new Decrypter();
    decrypter.addIdentity(alice.identity);
    expect(await decrypter.decrypt(cipher, 'text')).toBe('both');
    expect(new TextDecoder().decode(await decryptBytes(cipher, [bob.identity]))).toBe('both');
  });
});
