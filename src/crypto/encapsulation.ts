import { createCipheriv, createDecipheriv, createHmac, diffieHellman, type KeyObject } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { generateRawKeyPair, x25519PrivateKey, x25519PublicKey } from './keys.ts';

/**
 * lethe's cell encryption (docs/format.md has every byte, with a worked example).
 *
 * One key encapsulation per snapshot and tenant: the backup draws an ephemeral X25519 key
 * `e` (public `E`) and, for each dimension key `D` the tenant's new cells use, computes the
 * shared secret `Z_D = X25519(e, D)` once. The cells of one tuple of dimension keys
 * (`D1 … Dk`: period, user, conversation, tenant, those the cell has) share one pseudorandom
 * key, the tuple key
 *
 *     prk = HMAC-SHA-256(key = "lethe.cell-key.v1", Z_D1 ‖ … ‖ Z_Dk ‖ E ‖ "D1\nD2\n…Dk\n")
 *
 * (HKDF-Extract, RFC 5869, with the label as salt), and each cell its own key
 *
 *     K = HMAC-SHA-256(key = prk, "lethe.cell.v1\n" ‖ cell id ‖ 0x01)
 *
 * (HKDF-Expand for one 32-byte block). The cell is sealed with ChaCha20-Poly1305 (RFC 8439)
 * under K with a nonce of 12 zero bytes (K is used for exactly one plaintext) and no
 * associated data: ciphertext ‖ 16-byte tag.
 *
 * Opening needs `Z_D = X25519(d, E)` for every one of the cell's dimension keys, so it needs
 * every one of their identities. The extract, keyed by a public label over the concatenated
 * secrets, is taken as a random oracle, as HKDF-Extract is: `prk` is pseudorandom as long as
 * any one `Z_D` is unknown (the KEM-combiner argument, docs/architecture.md). Destroying any
 * dimension key shreds the cell. Public-key work is one X25519 per dimension key per
 * snapshot; per cell it is one HMAC (the expand) and one AEAD, plus the tuple's extract.
 */

export const CELL_KEY_SALT = 'lethe.cell-key.v1';
/** The extract's label for `kem` x25519-mlkem768 (docs/format.md); never the X25519-only one. */
export const HYBRID_CELL_KEY_SALT = 'lethe.cell-key.x25519-mlkem768.v1';
export const CELL_KEY_INFO = 'lethe.cell.v1\n';
/** Info prefix of the key that wraps a tuple key under a legal hold's re-encapsulation. */
export const HELD_KEY_INFO = 'lethe.held.v1\n';

export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
const ZERO_NONCE = Buffer.alloc(12);
const ONE = Buffer.from([1]);

/** An ephemeral X25519 key for one encapsulation. The private half never leaves memory. */
export interface Ephemeral {
  readonly privateKey: KeyObject;
  /** `E`, the raw 32-byte public key stored with the encapsulation. */
  readonly publicKey: Uint8Array;
}

/** A fresh ephemeral key from node:crypto's CSPRNG. */
export function newEphemeral(): Ephemeral {
  const pair = generateRawKeyPair();
  return { privateKey: x25519PrivateKey(pair.privateKey), publicKey: pair.publicKey };
}

/**
 * X25519(own private key, peer public key), refusing an all-zero result: a low-order peer
 * point gives a secret anyone can compute. Throws LetheError(KEY) naming `what`.
 */
export function sharedSecret(privateKey: KeyObject, peerPublic: Uint8Array, what: string): Buffer {
  let secret: Buffer;
  try {
    secret = diffieHellman({ privateKey, publicKey: x25519PublicKey(peerPublic) });
  } catch {
    // OpenSSL refuses to derive an all-zero secret; a point that will not import is as bad.
    throw new LetheError(ErrorCode.KEY, `${what} is a low-order or malformed X25519 point: no secret can be derived with it`);
  }
  if (secret.every((b) => b === 0)) throw new LetheError(ErrorCode.KEY, `${what} is a low-order X25519 point: no secret can be derived with it`);
  return secret;
}

/**
 * The tuple key: HKDF-Extract over the shared secrets of the cell's dimension keys (in the
 * order of `dimensionIds`), bound to the encapsulation's public key and to the ids.
 */
export function tupleKey(secrets: readonly Uint8Array[], ephemeralPublic: Uint8Array, dimensionIds: readonly string[]): Buffer {
  if (secrets.length === 0 || secrets.length !== dimensionIds.length) {
    throw new LetheError(ErrorCode.INTERNAL, `a tuple key needs one shared secret per dimension key (${secrets.length} for ${dimensionIds.length})`);
  }
  const mac = createHmac('sha256', CELL_KEY_SALT);
  for (const z of secrets) mac.update(z);
  mac.update(ephemeralPublic);
  for (const id of dimensionIds) mac.update(`${id}\n`, 'utf8');
  return mac.digest();
}

/** One dimension key's part of a hybrid (x25519-mlkem768) encapsulation. */
export interface HybridSecret {
  /** `Z_D = X25519(e, D)`, 32 bytes. */
  readonly z: Uint8Array;
  /** `K_D`, the ML-KEM-768 shared secret, 32 bytes. */
  readonly k: Uint8Array;
  /** `C_D`, the ML-KEM-768 ciphertext `K_D` came from, 1088 bytes. */
  readonly ciphertext: Uint8Array;
}

/**
 * The tuple key of a hybrid encapsulation: HKDF-Extract under {@link HYBRID_CELL_KEY_SALT}
 * over `Z_D1 ‖ K_D1 ‖ … ‖ Z_Dk ‖ K_Dk ‖ E ‖ C_D1 ‖ … ‖ C_Dk ‖ "D1\n" ‖ … ‖ "Dk\n"`
 * (fixed-size fields, so the message parses one way). Pseudorandom while, for any one
 * dimension key, either its X25519 or its ML-KEM secret is unknown (docs/architecture.md).
 */
export function hybridTupleKey(parts: readonly HybridSecret[], ephemeralPublic: Uint8Array, dimensionIds: readonly string[]): Buffer {
  if (parts.length === 0 || parts.length !== dimensionIds.length) {
    throw new LetheError(ErrorCode.INTERNAL, `a tuple key needs one shared secret per dimension key (${parts.length} for ${dimensionIds.length})`);
  }
  const mac = createHmac('sha256', HYBRID_CELL_KEY_SALT);
  for (const p of parts) {
    if (p.z.length !== KEY_BYTES || p.k.length !== KEY_BYTES || p.ciphertext.length !== 1088) {
      throw new LetheError(ErrorCode.INTERNAL, 'a hybrid tuple key takes 32-byte secrets and 1088-byte ML-KEM-768 ciphertexts');
    }
    mac.update(p.z).update(p.k);
  }
  mac.update(ephemeralPublic);
  for (const p of parts) mac.update(p.ciphertext);
  for (const id of dimensionIds) mac.update(`${id}\n`, 'utf8');
  return mac.digest();
}

/** HKDF-Expand (one block) of `prk` with `info`. */
function expand(prk: Uint8Array, info: string): Buffer {
  return createHmac('sha256', prk).update(info, 'utf8').update(ONE).digest();
}

/** The key of one cell: HKDF-Expand(tuple key, "lethe.cell.v1\n" ‖ cell id). */
export function cellKey(prk: Uint8Array, cellId: string): Buffer {
  return expand(prk, `${CELL_KEY_INFO}${cellId}`);
}

/** ChaCha20-Poly1305 under `key` (used for this one plaintext), zero nonce: ciphertext ‖ tag. */
export function seal(key: Uint8Array, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
  const head = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([head, cipher.getAuthTag()], head.length + TAG_BYTES);
}

/** Opens {@link seal}'s output. Throws LetheError(CRYPTO) when the tag does not verify. */
export function open(key: Uint8Array, sealed: Uint8Array, what: string): Buffer {
  if (sealed.length < TAG_BYTES) throw new LetheError(ErrorCode.CRYPTO, `${what}: ${sealed.length} bytes is shorter than a tag`);
  const decipher = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const plain = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    decipher.final();
  } catch {
    throw new LetheError(ErrorCode.CRYPTO, `${what} does not authenticate: wrong key, or the bytes were changed`);
  }
  return plain;
}

/**
 * {@link seal} as a stream, for a cell too large to hold: the ciphertext of each chunk as it
 * comes, then the tag. Same bytes as `seal` of the concatenation.
 */
export async function* sealStream(key: Uint8Array, plaintext: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const cipher = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
  for await (const chunk of plaintext) {
    const out = cipher.update(chunk);
    if (out.length > 0) yield out;
  }
  cipher.final();
  yield cipher.getAuthTag();
}

/**
 * {@link open} as a stream: releases plaintext as it is deciphered and throws
 * LetheError(CRYPTO) at the end when the tag does not verify, so the caller must treat what
 * it released as untrusted until the stream ends (restore loads into a transaction; lethe
 * also checks the ciphertext's sha256 before it starts).
 */
export async function* openStream(key: Uint8Array, sealed: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Uint8Array> {
  const decipher = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
  // The last TAG_BYTES of the input are the tag: hold them back until the input ends.
  let held = Buffer.alloc(0);
  for await (const chunk of sealed) {
    const all = held.length === 0 ? Buffer.from(chunk) : Buffer.concat([held, chunk]);
    const cut = Math.max(0, all.length - TAG_BYTES);
    held = all.subarray(cut);
    if (cut > 0) {
      const out = decipher.update(all.subarray(0, cut));
      if (out.length > 0) yield out;
    }
  }
  if (held.length < TAG_BYTES) throw new LetheError(ErrorCode.CRYPTO, `${what}: shorter than a tag`);
  decipher.setAuthTag(held);
  try {
    decipher.final();
  } catch {
    throw new LetheError(ErrorCode.CRYPTO, `${what} does not authenticate: wrong key, or the bytes were changed`);
  }
}

/**
 * The key that wraps a tuple key for a legal hold: HKDF-Expand of the hold's re-encapsulation
 * tuple key (the case key in place of the destroyed period key) with
 * "lethe.held.v1\n" ‖ tuple key id ‖ "\n" ‖ original encapsulation id.
 */
export function heldWrapKey(prk: Uint8Array, keyId: string, encapsulationId: string): Buffer {
  return expand(prk, `${HELD_KEY_INFO}${keyId}\n${encapsulationId}`);
}
