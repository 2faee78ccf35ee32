import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCode } from '../../../src/errors/index.ts';
import { decryptBytes, encryptBytes, generateKeyPair } from '../../../src/crypto/index.ts';
import { AgeProblem, ageProblemOf } from '../../../src/crypto/age-errors.ts';
import { encryptTo } from '../../../src/crypto/age.ts';
import { parseRecipients } from '../../../src/crypto/age-header.ts';
import { allMessages, expectSameBytes, letheError, plaintexts } from './support.ts';

const alice = generateKeyPair();
const bob = generateKeyPair();
const eve = generateKeyPair();
const secrets = [alice, bob, eve].map((k) => k.identity.slice(16));

function expectNoSecrets(err: unknown): void {
  for (const secret of secrets) expect(allMessages(err)).not.toContain(secret);
}

describe('encryptBytes / decryptBytes', () => {
  it('round-trips any plaintext, for each of several recipients', async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, async (plain) => {
        const cipher = await encryptBytes(plain, [alice.recipient, bob.recipient]);
        expect(cipher.length).toBeGreaterThan(plain.length);
        expectSameBytes(await decryptBytes(cipher, [alice.identity]), plain);
        expectSameBytes(await decryptBytes(cipher, [eve.identity, bob.identity]), plain);
      }),
      { numRuns: 30 },
    );
  });

  it('writes a binary age v1 file with one X25519 stanza per recipient', async () => {
    const cipher = await encryptBytes(new Uint8Array([1, 2, 3]), [alice.recipient, bob.recipient]);
    const header = Buffer.from(cipher).toString('latin1').split('\n---')[0] ?? '';
    expect(header.startsWith('age-encryption.org/v1\n-> X25519 ')).toBe(true);
    expect(header.match(/^-> X25519 /gm)).toHaveLength(2);
  });

  it('throws CRYPTO for a wrong identity, naming the likely cause', async () => {
    const cipher = await encryptBytes(new Uint8Array([1]), [alice.recipient]);
    const err = await letheError(() => decryptBytes(cipher, [eve.identity]), ErrorCode.CRYPTO);
    expect(err.message).toMatch(/none of the identities given opens it/);
    expectNoSecrets(err);
  });

  it('throws CRYPTO when any one byte is flipped, anywhere in the file', async () => {
    await fc.assert(
      fc.asyncProperty(
        plaintexts,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (plain, at, mask) => {
          const cipher = await encryptBytes(plain, [alice.recipient]);
          const tampered = cipher.slice();
          const index = at % tampered.length;
          tampered[index] = (tampered[index] ?? 0) ^ mask;
          const err = await letheError(
            () => decryptBytes(tampered, [alice.identity]),
            ErrorCode.CRYPTO,
          );
          expectNoSecrets(err);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('throws CRYPTO for any truncation and for trailing bytes', async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, fc.nat(), async (plain, at) => {
        const cipher = await encryptBytes(plain, [alice.recipient]);
        const truncated = cipher.subarray(0, at % cipher.length);
        await letheError(() => decryptBytes(truncated, [alice.identity]), ErrorCode.CRYPTO);
        const extended = new Uint8Array([...cipher, at % 256]);
        await letheError(() => decryptBytes(extended, [alice.identity]), ErrorCode.CRYPTO);
      }),
      { numRuns: 40 },
    );
  });

  it('refuses a header with an scrypt stanza beside others, even one it opens', async () => {
    // The age spec lets an scrypt stanza only stand alone; lethe refuses it whatever the keys.
    const scrypt = {
      wrapFileKey: () => [
        { args: ['scrypt', 'c2FsdHNhbHRzYWx0c2FsdA', '10'], body: new Uint8Array(32) },
      ],
    };
    const [toAlice] = parseRecipients([alice.recipient]);
    if (toAlice === undefined) throw new Error('no recipient');
    const mixed = encryptTo(new Uint8Array(3), [toAlice, scrypt]);
    const err = await letheError(() => decryptBytes(mixed, [alice.identity]), ErrorCode.CRYPTO);
    expect(ageProblemOf(err)).toBe(AgeProblem.MALFORMED);
    expect(err.message).toMatch(/an scrypt stanza is not the only stanza/);
    // Alone, it is just a stanza for no identity lethe has.
    const alone = encryptTo(new Uint8Array(3), [scrypt]);
    const noKey = await letheError(() => decryptBytes(alone, [alice.identity]), ErrorCode.CRYPTO);
    expect(ageProblemOf(noKey)).toBe(AgeProblem.NO_IDENTITY);
    // And an X25519 file still opens: the rule is about scrypt only.
    const plain = await decryptBytes(encryptTo(new Uint8Array(3), [toAlice]), [alice.identity]);
    expect(plain).toHaveLength(3);
  });

  it('never echoes content of a non-age input (which may be an identity)', async () => {
    const notAge = new TextEncoder().encode(`${alice.identity}\n`);
    const err = await letheError(() => decryptBytes(notAge, [alice.identity]), ErrorCode.CRYPTO);
    expect(err.message).toMatch(/not a well-formed age v1 file/);
    expectNoSecrets(err);
  });

  it('throws KEY for empty or malformed key lists, before touching the data', async () => {
    await letheError(() => encryptBytes(new Uint8Array(1), []), ErrorCode.KEY);
    await letheError(() => decryptBytes(new Uint8Array(1), []), ErrorCode.KEY);
    await letheError(() => encryptBytes(new Uint8Array(1), ['age1nope']), ErrorCode.KEY);
    const err = await letheError(
      () => decryptBytes(new Uint8Array(1), [alice.identity.slice(0, -1)]),
      ErrorCode.KEY,
    );
    expectNoSecrets(err);
  });
});
