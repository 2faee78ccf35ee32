import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';

const DIGEST_KEY_BYTES = 32;

/** An incremental keyed digest (HMAC-SHA-256) of a cell's plaintext. */
export interface CellDigest {
  /** Adds bytes; returns the same digest for chaining. Throws after {@link digest}. */
  update(chunk: Uint8Array): CellDigest;
  /** The lowercase hex HMAC of everything added. May be called once. */
  digest(): string;
}

/** 32 random bytes for {@link createCellDigest}, from node:crypto's CSPRNG. */
export function generateDigestKey(): Uint8Array {
  return new Uint8Array(randomBytes(DIGEST_KEY_BYTES));
}

/**
 * A keyed digest: without the key, a digest of guessable plaintext (a short message) reveals
 * nothing. Throws LetheError(KEY) unless `key` has 32 bytes.
 */
export function createCellDigest(key: Uint8Array): CellDigest {
  if (key.length !== DIGEST_KEY_BYTES) {
    throw new LetheError(
      ErrorCode.KEY,
      `digest key has ${key.length} bytes; expected ${DIGEST_KEY_BYTES} (use generateDigestKey)`,
    );
  }
  const hmac = createHmac('sha256', key);
  const digest: CellDigest = {
    update(chunk) {
      hmac.update(chunk);
      return digest;
    },
    digest: () => hmac.digest('hex'),
  };
  return digest;
}

/** The lowercase hex SHA-256 of `bytes`. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * True when `a` and `b` are equal, compared in time that depends only on their lengths: for
 * MACs, digests and identities, where an early exit would tell an attacker how many leading
 * characters of a guess were right. Strings are compared as UTF-8 bytes. Never throws.
 */
export function equalConstantTime(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const x = typeof a === 'string' ? Buffer.from(a, 'utf8') : Buffer.from(a);
  const y = typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b);
  if (x.length !== y.length) {
    // Same work either way, so a length mismatch is not faster than a content mismatch.
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}
