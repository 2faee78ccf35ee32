import { bech32 } from '@scure/base';
import { ErrorCode, LetheError } from '../errors/index.ts';

// The human-readable parts age uses; a recipient is written lowercase, an identity uppercase.
const RECIPIENT_HRP = 'age';
const IDENTITY_HRP = 'AGE-SECRET-KEY-';
const KEY_BYTES = 32;

/** Encodes a raw X25519 public key as an `age1...` recipient. */
export function encodeRecipient(publicKey: Uint8Array): string {
  return bech32.encodeFromBytes(RECIPIENT_HRP, publicKey);
}

/** Encodes a raw X25519 scalar as an `AGE-SECRET-KEY-1...` identity (uppercase, as age writes it). */
export function encodeIdentity(scalar: Uint8Array): string {
  return bech32.encodeFromBytes(IDENTITY_HRP, scalar).toUpperCase();
}

/**
 * Decodes an `age1...` X25519 recipient to its 32-byte public key. Throws LetheError(KEY)
 * when the string is not one; the message names the string only if it starts with `age1`,
 * so an identity pasted where a recipient belongs is not echoed.
 */
export function decodeRecipient(recipient: string): Uint8Array {
  const fail = (why: string): LetheError =>
    new LetheError(
      ErrorCode.KEY,
      `"${recipient}" is not an age X25519 recipient (${why}); expected age1 followed by 58 bech32 characters`,
    );
  if (!recipient.startsWith('age1')) {
    throw new LetheError(
      ErrorCode.KEY,
      `a ${recipient.length}-character string is not an age X25519 recipient (it does not start with age1)`,
    );
  }
  let decoded;
  try {
    decoded = bech32.decodeToBytes(recipient);
  } catch (err) {
    throw new LetheError(ErrorCode.KEY, fail('bad bech32 encoding or checksum').message, {
      cause: err,
    });
  }
  if (decoded.prefix !== RECIPIENT_HRP) throw fail(`unsupported type ${decoded.prefix}1`);
  if (decoded.bytes.length !== KEY_BYTES) throw fail(`${decoded.bytes.length}-byte key`);
  return decoded.bytes;
}

/**
 * Decodes an `AGE-SECRET-KEY-1...` X25519 identity to its 32-byte scalar.
 * Throws LetheError(KEY) when the string is not one. The message never contains the
 * string, and no cause is attached, because bech32 errors echo their input.
 */
export function decodeIdentity(identity: string): Uint8Array {
  const fail = (why: string): LetheError =>
    new LetheError(
      ErrorCode.KEY,
      `malformed age identity (${why}, ${identity.length} characters); expected AGE-SECRET-KEY-1 followed by 58 bech32 characters`,
    );
  if (!identity.startsWith('AGE-SECRET-KEY-')) throw fail('it does not start with AGE-SECRET-KEY-');
  let decoded;
  try {
    decoded = bech32.decodeToBytes(identity);
  } catch {
    throw fail('bad bech32 encoding or checksum');
  }
  if (decoded.prefix.toUpperCase() !== IDENTITY_HRP) throw fail('not an X25519 identity');
  if (decoded.bytes.length !== KEY_BYTES) throw fail(`${decoded.bytes.length}-byte key`);
  return decoded.bytes;
}
