import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';

/** An Ed25519 signing key: the public half as base64 of the raw 32 bytes, the private as PKCS#8 DER. */
export interface SigningKey {
  readonly publicKey: string;
  readonly privateKey: Uint8Array;
}

const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;

// DER SubjectPublicKeyInfo of an Ed25519 key is a fixed 12-byte prefix and the raw key.
const SPKI_PREFIX_BYTES = 12;

/** A fresh Ed25519 key pair from node:crypto. Never throws. */
export function generateSigningKey(): SigningKey {
  // Encoded by the generator: exporting a generated KeyObject can hang (see keys.ts).
  const { publicKey, privateKey } = generateKeyPairSync('ed25519', {
    publicKeyEncoding: { format: 'der', type: 'spki' },
    privateKeyEncoding: { format: 'der', type: 'pkcs8' },
  });
  return {
    publicKey: publicKey.subarray(SPKI_PREFIX_BYTES).toString('base64'),
    privateKey: new Uint8Array(privateKey),
  };
}

/**
 * The base64 Ed25519 signature of `message`. Throws LetheError(KEY) when `privateKey` is not
 * an Ed25519 PKCS#8 DER key; the message never contains the key.
 */
export function sign(privateKey: Uint8Array, message: Uint8Array): string {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: Buffer.from(privateKey), format: 'der', type: 'pkcs8' });
  } catch {
    throw new LetheError(ErrorCode.KEY, 'signing key is not a PKCS#8 DER private key');
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new LetheError(
      ErrorCode.KEY,
      `signing key is a ${String(key.asymmetricKeyType)} key; expected ed25519`,
    );
  }
  return nodeSign(null, message, key).toString('base64');
}

/**
 * True when `signature` (base64) is a valid Ed25519 signature of `message` by `publicKey`
 * (base64 of the raw 32 bytes). False for any malformed input; never throws.
 */
export function verifySignature(
  publicKey: string,
  message: Uint8Array,
  signature: string,
): boolean {
  const rawKey = strictBase64(publicKey, PUBLIC_KEY_BYTES);
  const rawSignature = strictBase64(signature, SIGNATURE_BYTES);
  if (rawKey === null || rawSignature === null) return false;
  try {
    const key = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: rawKey.toString('base64url') },
      format: 'jwk',
    });
    return nodeVerify(null, message, key, rawSignature);
  } catch {
    return false;
  }
}

/** Decodes canonical base64 of exactly `length` bytes; null otherwise (Buffer is lenient). */
function strictBase64(text: string, length: number): Buffer | null {
  const bytes = Buffer.from(text, 'base64');
  return bytes.length === length && bytes.toString('base64') === text ? bytes : null;
}
