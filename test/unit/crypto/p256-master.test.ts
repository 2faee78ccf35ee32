import { createECDH } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { P256Identity, decodeP256Recipient, decryptBytes, encodeP256Recipient, encryptBytes } from '../../../src/crypto/index.ts';

/** A P-256 key whose ECDH runs in node:crypto, standing in for the HSM's CKM_ECDH1_DERIVE. */
function softKey(): { recipient: string; identity: P256Identity; calls: () => number } {
  const key = createECDH('prime256v1');
  const point = key.generateKeys();
  let calls = 0;
  return {
    recipient: encodeP256Recipient(point),
    identity: new P256Identity(point, (share) => {
      calls += 1;
      return key.computeSecret(share);
    }),
    calls: () => calls,
  };
}

describe('the lethe-p256 age stanza', () => {
  it('wraps to the public key alone and opens only through the derive callback', async () => {
    const k = softKey();
    const secret = new TextEncoder().encode('a dimension key secret');
    const file = await encryptBytes(secret, [k.recipient]);
    expect(Buffer.from(file).toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> lethe-p256 [A-Za-z0-9+/]{87}\n/);
    expect(Buffer.from(await decryptBytes(file, [k.identity]))).toEqual(Buffer.from(secret));
    expect(k.calls()).toBe(1);
  });

  it('another key does not open it, and a changed stanza body fails', async () => {
    const k = softKey();
    const other = softKey();
    const file = await encryptBytes(Uint8Array.of(1, 2, 3), [k.recipient]);
    await expect(decryptBytes(file, [other.identity])).rejects.toThrow();
    const text = Buffer.from(file);
    const bodyAt = text.indexOf('\n', text.indexOf('-> lethe-p256')) + 1;
    text[bodyAt] = text[bodyAt] === 0x41 ? 0x42 : 0x41;
    await expect(decryptBytes(text, [k.identity])).rejects.toThrow();
  });

  it('refuses recipients that are not an uncompressed point on the curve', () => {
    const k = softKey();
    expect(decodeP256Recipient(k.recipient)).toHaveLength(65);
    expect(() => decodeP256Recipient(`lethe-p256:${Buffer.alloc(65, 4).toString('base64').replace(/=+$/, '')}`)).toThrow(/not a point/);
    expect(() => decodeP256Recipient('lethe-p256:AAAA')).toThrow(/65-byte/);
  });
});
