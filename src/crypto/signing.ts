import {
  createHash,
  createHmac,
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

// PKCS#8 DER of an Ed25519 private key (RFC 8410): a fixed 16-byte prefix and the 32-byte seed.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function pem(label: string, der: Uint8Array): string {
  const body = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/**
 * The key as an unencrypted PKCS#8 PEM block (`-----BEGIN PRIVATE KEY-----`), the form
 * `openssl pkey` reads. Never throws for a key from {@link generateSigningKey}.
 */
export function signingKeyToPem(key: SigningKey): string {
  return pem('PRIVATE KEY', key.privateKey);
}

/**
 * Parses an Ed25519 private key in PKCS#8 PEM. Throws LetheError(KEY) naming `what` (never
 * the content) when the text holds no PEM block, more than one, or a key of another type.
 */
export function signingKeyFromPem(text: string, what: string): SigningKey {
  const blocks = [...text.matchAll(/-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PRIVATE KEY-----/g)];
  const [only, ...more] = blocks;
  if (only === undefined || more.length > 0) {
    throw new LetheError(ErrorCode.KEY, `${what} does not hold exactly one "BEGIN PRIVATE KEY" PEM block (an Ed25519 key; \`lethe init\` writes one)`);
  }
  const der = Buffer.from((only[1] ?? '').replace(/\s+/g, ''), 'base64');
  if (der.length !== PKCS8_ED25519_PREFIX.length + 32 || !der.subarray(0, PKCS8_ED25519_PREFIX.length).equals(PKCS8_ED25519_PREFIX)) {
    throw new LetheError(ErrorCode.KEY, `${what} is not an Ed25519 private key in PKCS#8 form`);
  }
  let publicDer: Buffer;
  try {
    publicDer = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' });
  } catch {
    throw new LetheError(ErrorCode.KEY, `${what} is not a usable Ed25519 private key`);
  }
  return { publicKey: publicDer.subarray(SPKI_PREFIX_BYTES).toString('base64'), privateKey: new Uint8Array(der) };
}

/** An Ed25519 public key (base64 of the raw 32 bytes) as SPKI PEM, the form `openssl pkeyutl -pubin` reads. */
export function publicKeyToPem(publicKey: string): string {
  const raw = strictBase64(publicKey, PUBLIC_KEY_BYTES);
  if (raw === null) throw new LetheError(ErrorCode.KEY, 'not an Ed25519 public key (base64 of 32 bytes)');
  return pem('PUBLIC KEY', Buffer.concat([SPKI_ED25519_PREFIX, raw]));
}

/**
 * Parses an Ed25519 public key given as SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or as base64
 * of the raw 32 bytes; returns the base64 form. Throws LetheError(KEY) naming `what`.
 */
export function publicKeyFromText(text: string, what: string): string {
  const block = /-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----/.exec(text);
  if (block === null) {
    const raw = strictBase64(text.trim(), PUBLIC_KEY_BYTES);
    if (raw === null) throw new LetheError(ErrorCode.KEY, `${what} is neither a PEM public key nor base64 of a raw Ed25519 key`);
    return raw.toString('base64');
  }
  const der = Buffer.from((block[1] ?? '').replace(/\s+/g, ''), 'base64');
  if (der.length !== SPKI_ED25519_PREFIX.length + PUBLIC_KEY_BYTES || !der.subarray(0, SPKI_ED25519_PREFIX.length).equals(SPKI_ED25519_PREFIX)) {
    throw new LetheError(ErrorCode.KEY, `${what} is not an Ed25519 public key`);
  }
  return der.subarray(SPKI_ED25519_PREFIX.length).toString('base64');
}

/**
 * The stable id of a signing key: `ed25519-` and the first 16 hex digits of the sha256 of
 * its raw public key. The same key always has the same id, so a key file and the vault's
 * record of its public half match without any other bookkeeping.
 */
export function signingKeyId(publicKey: string): string {
  const raw = strictBase64(publicKey, PUBLIC_KEY_BYTES);
  if (raw === null) throw new LetheError(ErrorCode.KEY, 'not an Ed25519 public key (base64 of 32 bytes)');
  return `ed25519-${createHash('sha256').update(raw).digest('hex').slice(0, 16)}`;
}

/**
 * A 32-byte secret derived from the signing key for another purpose (`label`, a domain tag):
 * HMAC-SHA-256 keyed by the Ed25519 seed. Knowing the derived secret tells nothing about the
 * seed, and secrets for different labels are independent.
 */
export function deriveFromSigningKey(key: SigningKey, label: string): Uint8Array {
  const seed = Buffer.from(key.privateKey).subarray(PKCS8_ED25519_PREFIX.length);
  return new Uint8Array(createHmac('sha256', seed).update(label, 'utf8').digest());
}
