// The cryptography of an age v1 header: a fresh file key wrapped to each recipient and the
// header MAC that binds the stanzas to it (age-encryption.org/v1, "Header MAC").
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { AgeFailure, AgeProblem } from './age-errors.ts';
import { encodeHeaderWithoutMac, encodeMacLine, type Header, type Stanza } from './age-format.ts';
import { hkdfSha256 } from './hkdf.ts';
import { randomBytes } from './random.ts';
import { P256_RECIPIENT_PREFIX, P256Recipient } from './p256-master.ts';
import { FastX25519Identity, FastX25519Recipient } from './x25519.ts';

const FILE_KEY_BYTES = 16;
/** Bytes of the payload nonce that follows the header. */
export const PAYLOAD_NONCE_BYTES = 16;
const HEADER_LABEL = 'header';
const SCRYPT_TYPE = 'scrypt';

// Recipients are public and lethe encrypts to the same few (dimension and master keys) over
// and over; decoding and importing one costs as much as a third of a small file.
const RECIPIENT_CACHE_SIZE = 256;
const recipientCache = new Map<string, FileKeyWrapper>();

/**
 * The failure for a file that ends before its payload nonce is complete: a malformed file,
 * not a damaged payload, as the age reference and its test vectors class it (the nonce is
 * read with the header, before any payload).
 */
export function nonceCutShort(): AgeFailure {
  return new AgeFailure(AgeProblem.MALFORMED, 'it ends inside the nonce that follows its header');
}

/**
 * The X25519 recipients for `recipients` (`age1...`). Throws LetheError(KEY) for an empty list
 * or a malformed recipient, so bad input fails before any data is read.
 */
export function parseRecipients(recipients: readonly string[]): FileKeyWrapper[] {
  if (recipients.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'cannot encrypt to an empty list of age recipients');
  }
  return recipients.map((recipient) => {
    let parsed = recipientCache.get(recipient);
    if (parsed === undefined) {
      // A master key in an HSM is a `lethe-p256:` recipient (p256-master.ts).
      parsed = recipient.startsWith(P256_RECIPIENT_PREFIX) ? new P256Recipient(recipient) : new FastX25519Recipient(recipient);
      if (recipientCache.size >= RECIPIENT_CACHE_SIZE) recipientCache.clear();
      recipientCache.set(recipient, parsed);
    }
    return parsed;
  });
}

/**
 * The X25519 identities for `identities` (`AGE-SECRET-KEY-1...`). Not cached: a destroyed
 * key must not outlive its last use in this process. Throws LetheError(KEY) for an empty
 * list or a malformed identity (the message never contains it).
 */
export function parseIdentities(identities: readonly (string | FileKeyUnwrapper)[]): FileKeyUnwrapper[] {
  if (identities.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'cannot decrypt with an empty list of age identities');
  }
  // An identity object is one whose private key lives elsewhere (an HSM: p256-master.ts).
  return identities.map((identity) => (typeof identity === 'string' ? new FastX25519Identity(identity) : identity));
}

/** Wraps a file key into stanzas: a {@link FastX25519Recipient}, or in tests a synthetic one. */
export interface FileKeyWrapper {
  wrapFileKey(fileKey: Uint8Array): Stanza[];
}

/** Unwraps a file key from stanzas, or returns null: a {@link FastX25519Identity} in lethe. */
export interface FileKeyUnwrapper {
  unwrapFileKey(stanzas: Stanza[]): Uint8Array | null;
}

/** A new file's header text and the keys for its payload. */
export interface NewHeader {
  /** The whole header, MAC line included (ASCII). */
  readonly text: string;
  readonly fileKey: Uint8Array;
  /** The random payload nonce, to be written right after the header. */
  readonly nonce: Uint8Array;
}

/**
 * Draws a file key and payload nonce and writes the header: one stanza per recipient and the
 * MAC. Throws LetheError(KEY) if a recipient cannot be encrypted to (a low-order point).
 */
export function newHeader(recipients: readonly FileKeyWrapper[]): NewHeader {
  const random = randomBytes(FILE_KEY_BYTES + PAYLOAD_NONCE_BYTES);
  const fileKey = random.subarray(0, FILE_KEY_BYTES);
  const nonce = random.subarray(FILE_KEY_BYTES);
  const stanzas: Stanza[] = [];
  for (const recipient of recipients) stanzas.push(...recipient.wrapFileKey(fileKey));
  const withoutMac = encodeHeaderWithoutMac(stanzas);
  const mac = headerMac(fileKey).update(withoutMac, 'latin1').digest();
  return { text: withoutMac + encodeMacLine(mac), fileKey, nonce };
}

/**
 * The file key of a parsed header: the first one any identity unwraps from the stanzas (in
 * identity order), once the header MAC verifies with it. Throws AgeFailure(MALFORMED) for a
 * header where an scrypt stanza is not alone or for a malformed X25519 stanza,
 * AgeFailure(NO_IDENTITY) when no identity unwraps, and AgeFailure(HEADER_MAC) when the MAC
 * does not verify.
 */
export function openHeader(header: Header, identities: readonly FileKeyUnwrapper[]): Uint8Array {
  // The age spec: an scrypt stanza must be the only one, so that a passphrase-encrypted file
  // stays authenticated by the passphrase, and an identity that reads scrypt must refuse a
  // header that breaks the rule. lethe has no such identity, but refuses these headers all
  // the same, whatever the identities: no age implementation writes one.
  if (header.stanzas.length > 1 && header.stanzas.some((s) => s.args[0] === SCRYPT_TYPE)) {
    throw new AgeFailure(AgeProblem.MALFORMED, 'an scrypt stanza is not the only stanza');
  }
  let fileKey: Uint8Array | null = null;
  for (const identity of identities) {
    fileKey = identity.unwrapFileKey(header.stanzas);
    if (fileKey !== null) break;
  }
  if (fileKey === null) throw new AgeFailure(AgeProblem.NO_IDENTITY);
  const mac = headerMac(fileKey).update(header.macInput).digest();
  if (!timingSafeEqual(mac, header.mac)) throw new AgeFailure(AgeProblem.HEADER_MAC);
  return fileKey;
}

function headerMac(fileKey: Uint8Array): ReturnType<typeof createHmac> {
  return createHmac('sha256', hkdfSha256(fileKey, new Uint8Array(), HEADER_LABEL));
}
