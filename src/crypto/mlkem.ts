import { randomBytes } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { equalConstantTime } from './digest.ts';
import { parseX25519PrivateKeyPem, publicKeyOf, x25519PrivateKeyPem } from './keys.ts';

/**
 * ML-KEM-768 (FIPS 203) for `keys.postQuantum` (docs/format.md, "Post-quantum dimension keys
 * and encapsulations"), on @noble/post-quantum: node 20's node:crypto has no ML-KEM. A
 * dimension key's ML-KEM half is kept as its 64-byte seed (d ‖ z), from which keygen
 * re-derives the key pair; only the seed is ever wrapped to the master key.
 */

export const MLKEM_SEED_BYTES = 64;
export const MLKEM_PUBLIC_BYTES = 1184;
export const MLKEM_CIPHERTEXT_BYTES = 1088;
export const MLKEM_SHARED_BYTES = 32;

/**
 * PKCS#8 prefix of an ML-KEM-768 private key in seed-only form: version 0, AlgorithmIdentifier
 * id-alg-ml-kem-768 (2.16.840.1.101.3.4.4.2, no parameters), privateKey an OCTET STRING
 * holding the `seed [0]` choice of ML-KEM-PrivateKey (IETF LAMPS ML-KEM key encoding).
 */
const PKCS8_MLKEM768_SEED_PREFIX = Buffer.from('3054020100300b060960864801650304040204428040', 'hex');

/** An ML-KEM-768 key pair; `secretKey` is the expanded decapsulation key (secret). */
export interface MlKemKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/** A fresh 64-byte ML-KEM seed from node:crypto's CSPRNG. */
export function newMlKemSeed(): Uint8Array {
  return new Uint8Array(randomBytes(MLKEM_SEED_BYTES));
}

/** The key pair a 64-byte seed (d ‖ z) determines (ML-KEM.KeyGen_internal). */
export function mlkemKeyPair(seed: Uint8Array): MlKemKeyPair {
  if (seed.length !== MLKEM_SEED_BYTES) throw new LetheError(ErrorCode.INTERNAL, `an ML-KEM-768 seed is ${MLKEM_SEED_BYTES} bytes, not ${seed.length}`);
  return ml_kem768.keygen(seed);
}

/**
 * Encapsulates to `publicKey`: a 1088-byte ciphertext and a 32-byte shared secret. `random`
 * (32 bytes) only for test vectors; otherwise drawn from the CSPRNG. Throws LetheError(KEY)
 * naming `what` when the public key is malformed (FIPS 203's modulus check).
 */
export function mlkemEncapsulate(publicKey: Uint8Array, what: string, random?: Uint8Array): { ciphertext: Uint8Array; secret: Uint8Array } {
  if (publicKey.length !== MLKEM_PUBLIC_BYTES) throw new LetheError(ErrorCode.KEY, `${what} has an ML-KEM-768 public key of ${publicKey.length} bytes, not ${MLKEM_PUBLIC_BYTES}`);
  try {
    const out = ml_kem768.encapsulate(publicKey, random ?? new Uint8Array(randomBytes(32)));
    return { ciphertext: out.cipherText, secret: out.sharedSecret };
  } catch {
    throw new LetheError(ErrorCode.KEY, `${what} has a malformed ML-KEM-768 public key: nothing can be encapsulated to it`);
  }
}

/**
 * Decapsulates `ciphertext` with the expanded `secretKey`. ML-KEM rejects implicitly: a
 * changed ciphertext gives an unrelated secret, never an error, so a wrong key shows up as a
 * cell that does not authenticate. Throws LetheError(KEY) naming `what` for a wrong length.
 */
export function mlkemDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array, what: string): Uint8Array {
  if (ciphertext.length !== MLKEM_CIPHERTEXT_BYTES) throw new LetheError(ErrorCode.KEY, `${what} has an ML-KEM-768 ciphertext of ${ciphertext.length} bytes, not ${MLKEM_CIPHERTEXT_BYTES}`);
  return ml_kem768.decapsulate(ciphertext, secretKey);
}

/** The seed as an unencrypted PKCS#8 PEM block (64-character lines, as openssl writes them). */
export function mlkemSeedPem(seed: Uint8Array): string {
  const body = Buffer.concat([PKCS8_MLKEM768_SEED_PREFIX, seed]).toString('base64');
  const lines = body.match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
}

/**
 * What a dimension key's wrapped secret holds (docs/format.md, "Dimension keys"): the X25519
 * private key, and for a post-quantum key the ML-KEM-768 seed. Either half may be null: a
 * half that is not there was destroyed, and no cell that needs it can be opened.
 */
export interface DimensionSecret {
  readonly x25519: Uint8Array | null;
  readonly mlkemSeed: Uint8Array | null;
}

/**
 * The plaintext wrapped to the master key. Version 1 (X25519 only, every key made before
 * `keys.postQuantum`): one PKCS#8 PEM block of the X25519 key. Version 2: that block, then
 * one of the ML-KEM-768 seed. The X25519 block comes first so that `openssl pkey` and
 * runbooks/dr-decrypt.sh, which read the first block, read both versions unchanged.
 */
export function encodeDimensionSecret(secret: { readonly x25519: Uint8Array; readonly mlkemSeed: Uint8Array | null }): string {
  const first = x25519PrivateKeyPem(secret.x25519);
  return secret.mlkemSeed === null ? first : first + mlkemSeedPem(secret.mlkemSeed);
}

const PEM_BLOCK = /-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PRIVATE KEY-----\s*/gy;

/**
 * Parses {@link encodeDimensionSecret}'s text: one or two PKCS#8 blocks, each at most once,
 * X25519 before ML-KEM-768, nothing else. Throws LetheError(KEY) naming `what` (never quoting
 * the text) for anything else.
 */
export function parseDimensionSecret(text: string, what: string): DimensionSecret {
  const bad = (): LetheError => new LetheError(ErrorCode.KEY, `${what} is not an X25519 and/or ML-KEM-768 private key in PKCS#8 PEM form`);
  PEM_BLOCK.lastIndex = 0;
  let x25519: Uint8Array | null = null;
  let mlkemSeed: Uint8Array | null = null;
  let blocks = 0;
  for (;;) {
    const start = PEM_BLOCK.lastIndex;
    const match = PEM_BLOCK.exec(text);
    if (match === null) {
      if (start !== text.length || blocks === 0) throw bad();
      break;
    }
    blocks += 1;
    const der = Buffer.from((match[1] ?? '').replace(/\s+/g, ''), 'base64');
    if (der.length === PKCS8_MLKEM768_SEED_PREFIX.length + MLKEM_SEED_BYTES && der.subarray(0, PKCS8_MLKEM768_SEED_PREFIX.length).equals(PKCS8_MLKEM768_SEED_PREFIX)) {
      if (mlkemSeed !== null) throw bad();
      mlkemSeed = new Uint8Array(der.subarray(PKCS8_MLKEM768_SEED_PREFIX.length));
    } else {
      // The X25519 block must come first: a text with it after the ML-KEM block is not ours.
      if (x25519 !== null || mlkemSeed !== null) throw bad();
      x25519 = parseX25519PrivateKeyPem(match[0].trim(), what);
    }
    der.fill(0);
  }
  return { x25519, mlkemSeed };
}

/**
 * Checks a parsed secret against the public keys the vault stores beside it, in constant
 * time: null when every half that is there matches (and an ML-KEM half is there only where
 * the vault lists an ML-KEM public key), else what is wrong, for the caller's report.
 */
export function dimensionSecretProblem(secret: DimensionSecret, x25519Public: Uint8Array, mlkemPublic: Uint8Array | null): string | null {
  if (secret.x25519 !== null) {
    let matches: boolean;
    try {
      matches = equalConstantTime(publicKeyOf(secret.x25519), x25519Public);
    } catch {
      matches = false;
    }
    if (!matches) return 'the X25519 private key unwrapped from the vault is not the key its recipient names; the vault row was altered';
  }
  if (secret.mlkemSeed !== null) {
    if (mlkemPublic === null) return 'its wrapped secret holds an ML-KEM-768 half, but the vault lists no ML-KEM public key for it; the vault row was altered';
    if (!equalConstantTime(mlkemKeyPair(secret.mlkemSeed).publicKey, mlkemPublic)) {
      return 'the ML-KEM-768 seed unwrapped from the vault is not the key its ML-KEM public key names; the vault row was altered';
    }
  }
  return null;
}
