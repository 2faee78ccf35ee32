// Never export a KeyObject that generateKeyPairSync returned: on Node 20.20 its JWK export can
// block forever on an uninitialised key mutex (a futex wait in most of our stress runs, see
// test/integration/crypto/keygen-stress.test.ts; nodejs/node#64851 fixes key-data mutex
// sharing). Ask the generator for encoded keys instead, and export only imported keys.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { decodeIdentity, encodeIdentity, encodeRecipient } from './bech32.ts';

/** An age X25519 key pair as the strings age-keygen prints. */
export interface KeyPair {
  readonly identity: string;
  readonly recipient: string;
}

// PKCS#8 prefix of a raw X25519 private key (RFC 8410): used only if the fast JWK import
// below is ever refused.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

/** Imports a raw 32-byte X25519 public key. JWK import is ~15x faster than DER in Node 20. */
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64url(raw) }, format: 'jwk' });
}

// Whether JWK import with a placeholder `x` works; Node 26 validates `x` and refuses it.
let placeholderImportWorks = true;

/**
 * Imports a raw 32-byte X25519 scalar. Node 20's JWK import needs an `x` member but derives
 * the public key from `d` itself, so a placeholder is passed: this is ~13x faster than
 * parsing DER. Where `x` is checked, the DER path keeps this correct, only slower.
 */
export function x25519PrivateKey(raw: Uint8Array): KeyObject {
  if (placeholderImportWorks) {
    const d = b64url(raw);
    try {
      return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d, x: d }, format: 'jwk' });
    } catch {
      placeholderImportWorks = false;
    }
  }
  const der = Buffer.concat([PKCS8_X25519_PREFIX, raw]);
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
}

/** The raw 32-byte public key of an imported (not generated) X25519 KeyObject; see above. */
export function rawPublicKey(key: KeyObject): Uint8Array {
  return jwkBytes(key.export({ format: 'jwk' }).x);
}

// Node documents JWK output for key generation, but @types/node 20 does not declare it.
interface JwkKeygen {
  (
    type: 'x25519',
    options: { publicKeyEncoding: { format: 'jwk' }; privateKeyEncoding: { format: 'jwk' } },
  ): { publicKey: JsonWebKey; privateKey: JsonWebKey };
  (
    type: 'x25519',
    options: { publicKeyEncoding: { format: 'jwk' } },
  ): { publicKey: JsonWebKey; privateKey: KeyObject };
}
const generateJwk = generateKeyPairSync as unknown as JwkKeygen;

/** A fresh X25519 key pair from node:crypto's CSPRNG. Never throws. */
export function generateKeyPair(): KeyPair {
  const { privateKey } = generateJwk('x25519', {
    publicKeyEncoding: { format: 'jwk' },
    privateKeyEncoding: { format: 'jwk' },
  });
  return {
    identity: encodeIdentity(jwkBytes(privateKey.d)),
    recipient: encodeRecipient(jwkBytes(privateKey.x)),
  };
}

/** A fresh X25519 key pair as raw 32-byte halves, from node:crypto's CSPRNG. Never throws. */
export function generateRawKeyPair(): { privateKey: Uint8Array; publicKey: Uint8Array } {
  const { privateKey } = generateJwk('x25519', {
    publicKeyEncoding: { format: 'jwk' },
    privateKeyEncoding: { format: 'jwk' },
  });
  return { privateKey: jwkBytes(privateKey.d), publicKey: jwkBytes(privateKey.x) };
}

/**
 * A raw X25519 private key as an unencrypted PKCS#8 PEM block, the form `openssl pkey` and
 * `openssl pkeyutl -derive` read: how the vault wraps dimension keys (docs/format.md).
 */
export function x25519PrivateKeyPem(raw: Uint8Array): string {
  const body = Buffer.concat([PKCS8_X25519_PREFIX, raw]).toString('base64');
  return `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`;
}

/**
 * The raw 32-byte X25519 private key in a PKCS#8 PEM block written by
 * {@link x25519PrivateKeyPem}. Throws LetheError(KEY) (never quoting the text) otherwise.
 */
export function parseX25519PrivateKeyPem(text: string, what: string): Uint8Array {
  const block = /^-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=]+)\s*-----END PRIVATE KEY-----\s*$/.exec(text);
  const der = block === null ? null : Buffer.from(block[1] ?? '', 'base64');
  if (der === null || der.length !== PKCS8_X25519_PREFIX.length + 32 || !der.subarray(0, PKCS8_X25519_PREFIX.length).equals(PKCS8_X25519_PREFIX)) {
    throw new LetheError(ErrorCode.KEY, `${what} is not an X25519 private key in PKCS#8 PEM form`);
  }
  return new Uint8Array(der.subarray(PKCS8_X25519_PREFIX.length));
}

/** The raw public key of a raw X25519 private key. */
export function publicKeyOf(rawPrivate: Uint8Array): Uint8Array {
  return rawPublicKey(x25519PrivateKey(rawPrivate));
}

/**
 * A fresh ephemeral X25519 key: the private half as a KeyObject for Diffie-Hellman (which
 * does not take the key's lock, so it is safe to use), the public half already encoded.
 */
export function ephemeralKey(): { privateKey: KeyObject; share: Uint8Array } {
  const { publicKey, privateKey } = generateJwk('x25519', { publicKeyEncoding: { format: 'jwk' } });
  return { privateKey, share: jwkBytes(publicKey.x) };
}

function jwkBytes(member: unknown): Uint8Array {
  if (typeof member !== 'string') throw new TypeError('node:crypto returned a JWK without a key');
  return Buffer.from(member, 'base64url');
}

/**
 * The `age1...` recipient of an `AGE-SECRET-KEY-1...` identity, equal to `age-keygen -y`.
 * Throws LetheError(KEY) if the identity is malformed; the message never contains it.
 */
export function recipientOf(identity: string): string {
  return encodeRecipient(rawPublicKey(x25519PrivateKey(decodeIdentity(identity))));
}
