import { ageError } from './age-errors.ts';
import { parseHeader } from './age-format.ts';
import {
  newHeader,
  nonceCutShort,
  openHeader,
  parseIdentities,
  parseRecipients,
  PAYLOAD_NONCE_BYTES,
  type FileKeyUnwrapper,
  type FileKeyWrapper,
} from './age-header.ts';
import { openPayload, payloadKey, sealedLength, sealPayload } from './age-payload.ts';

/**
 * Encrypts `plain` to every recipient as one binary age v1 file (readable by `age -d`).
 * Throws LetheError(KEY) for an empty or malformed recipient list.
 */
export function encryptBytes(
  plain: Uint8Array,
  recipients: readonly string[],
): Promise<Uint8Array> {
  // All the work is synchronous (OpenSSL on this thread); the promise keeps the contract.
  return new Promise((resolve) => resolve(encryptTo(plain, parseRecipients(recipients))));
}

/**
 * Decrypts one binary age v1 file with any of the identities and returns the plaintext, only
 * once all of it has authenticated. Throws LetheError(KEY) for an empty or malformed identity
 * list, and LetheError(CRYPTO) when no identity opens the file or it is malformed, truncated
 * or modified (`details.ageProblem` says which: see ageProblemOf, age-errors.ts). Messages
 * never contain key material or file content.
 */
export function decryptBytes(
  cipher: Uint8Array,
  identities: readonly (string | FileKeyUnwrapper)[],
): Promise<Uint8Array> {
  return new Promise((resolve) => resolve(decryptWith(cipher, parseIdentities(identities))));
}

/**
 * {@link encryptBytes} to recipients already parsed, synchronously; exported for tests that
 * add synthetic stanzas. Throws LetheError(KEY) when a recipient cannot be encrypted to.
 */
export function encryptTo(plain: Uint8Array, recipients: readonly FileKeyWrapper[]): Uint8Array {
  try {
    const { text, fileKey, nonce } = newHeader(recipients);
    // Every byte is written below, so the memory need not be zeroed first.
    const out = Buffer.allocUnsafeSlow(text.length + nonce.length + sealedLength(plain.length));
    let at = out.write(text, 'latin1');
    out.set(nonce, at);
    at += nonce.length;
    sealPayload(payloadKey(fileKey, nonce), plain, out, at);
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  } catch (err) {
    throw ageError('encrypting age file', err);
  }
}

/** {@link decryptBytes} with identities already parsed, synchronously; exported for tests. */
export function decryptWith(
  cipher: Uint8Array,
  identities: readonly FileKeyUnwrapper[],
): Uint8Array {
  try {
    const { header, rest } = parseHeader(cipher);
    const fileKey = openHeader(header, identities);
    if (rest.length < PAYLOAD_NONCE_BYTES) {
      throw nonceCutShort();
    }
    const nonce = rest.subarray(0, PAYLOAD_NONCE_BYTES);
    return openPayload(payloadKey(fileKey, nonce), rest.subarray(PAYLOAD_NONCE_BYTES));
  } catch (err) {
    throw ageError('decrypting age file', err);
  }
}
