import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCode } from '../../../src/errors/index.ts';
import { generateSigningKey, sign, verifySignature } from '../../../src/crypto/index.ts';
import { allMessages, letheError } from './support.ts';

// RFC 8032, section 7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72).
const PKCS8_ED25519_PREFIX = '302e020100300506032b657004220420';
const RFC_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const RFC_PUBLIC = Buffer.from(
  'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  'hex',
).toString('base64');
const RFC_SIGNATURE_EMPTY = Buffer.from(
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  'hex',
).toString('base64');
const RFC2_SEED = '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb';
const RFC2_SIGNATURE = Buffer.from(
  '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  'hex',
).toString('base64');

const pkcs8 = (seed: string): Uint8Array => Buffer.from(PKCS8_ED25519_PREFIX + seed, 'hex');

describe('Ed25519 signatures', () => {
  it('reproduces the RFC 8032 test vectors', () => {
    expect(sign(pkcs8(RFC_SEED), new Uint8Array())).toBe(RFC_SIGNATURE_EMPTY);
    expect(verifySignature(RFC_PUBLIC, new Uint8Array(), RFC_SIGNATURE_EMPTY)).toBe(true);
    expect(sign(pkcs8(RFC2_SEED), new Uint8Array([0x72]))).toBe(RFC2_SIGNATURE);
  });

  it('verifies its own signatures and rejects any change', () => {
    const key = generateSigningKey();
    const other = generateSigningKey();
    expect(Buffer.from(key.publicKey, 'base64')).toHaveLength(32);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 500 }), fc.nat(), (message, at) => {
        const signature = sign(key.privateKey, message);
        expect(verifySignature(key.publicKey, message, signature)).toBe(true);
        expect(verifySignature(other.publicKey, message, signature)).toBe(false);
        const changed = message.slice();
        changed[at % changed.length] = (changed[at % changed.length] ?? 0) ^ 1;
        expect(verifySignature(key.publicKey, changed, signature)).toBe(false);
        const raw = Buffer.from(signature, 'base64');
        raw[at % 64] = (raw[at % 64] ?? 0) ^ 0x10;
        expect(verifySignature(key.publicKey, message, raw.toString('base64'))).toBe(false);
      }),
      { numRuns: 50 },
    );
  });

  it('returns false, never throws, for malformed keys and signatures', () => {
    const key = generateSigningKey();
    const message = new TextEncoder().encode('manifest');
    const good = sign(key.privateKey, message);
    const malformed: readonly [string, string][] = [
      ['', good],
      [key.publicKey, ''],
      ['not base64!', good],
      [key.publicKey, 'not base64!'],
      [key.publicKey.slice(0, -4), good],
      [key.publicKey, good.slice(0, -4)],
      [key.publicKey, `${good}AAAA`],
      [key.publicKey.replace(/=$/, ''), good], // unpadded: not canonical
      [key.publicKey, Buffer.alloc(64).toString('base64')],
      [Buffer.alloc(32).toString('base64'), good],
    ];
    for (const [publicKey, signature] of malformed) {
      expect(verifySignature(publicKey, message, signature)).toBe(false);
    }
  });

  it('refuses a private key that is not Ed25519 PKCS#8 with KEY, without echoing it', async () => {
    const x25519 = generateKeyPairSync('x25519').privateKey.export({
      format: 'der',
      type: 'pkcs8',
    });
    const err = await letheError(() => sign(x25519, new Uint8Array(1)), ErrorCode.KEY);
    expect(err.message).toMatch(/x25519 key; expected ed25519/);
    const garbage = new Uint8Array(48).fill(7);
    const err2 = await letheError(() => sign(garbage, new Uint8Array(1)), ErrorCode.KEY);
    expect(allMessages(err2)).not.toContain('070707');
  });
});
