import { Decrypter, Encrypter } from 'age-encryption';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { ageError } from './age-errors.ts';
import { FastX25519Identity, FastX25519Recipient } from './x25519.ts';

/**
 * An Encrypter for the given X25519 recipients. Throws LetheError(KEY) for an empty list or
 * a malformed recipient, so bad input fails before any data is read.
 */
export function newEncrypter(recipients: readonly string[]): Encrypter {
  if (recipients.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'cannot encrypt to an empty list of age recipients');
  }
  const encrypter = new Encrypter();
  for (const recipient of recipients) encrypter.addRecipient(new FastX25519Recipient(recipient));
  return encrypter;
}

/**
 * A Decrypter for the given X25519 identities. Throws LetheError(KEY) for an empty list or
 * a malformed identity (the message never contains it).
 */
export function newDecrypter(identities: readonly string[]): Decrypter {
  if (identities.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'cannot decrypt with an empty list of age identities');
  }
  const decrypter = new Decrypter();
  for (const identity of identities) decrypter.addIdentity(new FastX25519Identity(identity));
  return decrypter;
}

/**
 * Encrypts `plain` to every recipient as one binary age v1 file (readable by `age -d`).
 * Throws LetheError(KEY) for an empty or malformed recipient list.
 */
export async function encryptBytes(
  plain: Uint8Array,
  recipients: readonly string[],
): Promise<Uint8Array> {
  const encrypter = newEncrypter(recipients);
  try {
    return await encrypter.encrypt(plain);
  } catch (err) {
    throw ageError('encrypting age file', err);
  }
}

/**
 * Decrypts one binary age v1 file with any of the identities and returns the plaintext.
 * Throws LetheError(KEY) for an empty or malformed identity list, and LetheError(CRYPTO)
 * when no identity opens the file or it is malformed, truncated or modified. Messages never
 * contain key material or file content.
 */
export async function decryptBytes(
  cipher: Uint8Array,
  identities: readonly string[],
): Promise<Uint8Array> {
  const decrypter = newDecrypter(identities);
  try {
    return await decrypter.decrypt(cipher);
  } catch (err) {
    throw ageError('decrypting age file', err);
  }
}
