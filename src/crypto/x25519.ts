import { createCipheriv, createDecipheriv, diffieHellman, type KeyObject } from 'node:crypto';
// Types only: checks at compile time that these plug into the age library's Encrypter and
// Decrypter (the tests use it as an interop oracle); nothing of it runs in lethe.
import type { Identity, Recipient } from 'age-encryption';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { AgeFailure, AgeProblem } from './age-errors.ts';
import { decodeBase64, encodeBase64, type Stanza } from './age-format.ts';
import { decodeIdentity, decodeRecipient, encodeRecipient } from './bech32.ts';
import { hkdfSha256 } from './hkdf.ts';
import { ephemeralKey, rawPublicKey, x25519PrivateKey, x25519PublicKey } from './keys.ts';

// The age v1 X25519 recipient type (age-encryption.org/v1, "X25519 recipient stanza").
const STANZA_TYPE = 'X25519';
const WRAP_LABEL = 'age-encryption.org/v1/X25519';
const FILE_KEY_BYTES = 16;
const TAG_BYTES = 16;
const ZERO_NONCE = Buffer.alloc(12);

/**
 * age's X25519 recipient on node:crypto (OpenSSL) instead of the pure-JS curve the
 * age-encryption library uses: about 10x more wraps per second (bench/x25519.ts), which
 * matters for every dimension key wrapped to the master key and every vault backup.
 */
export class FastX25519Recipient implements Recipient {
  readonly #recipient: string;
  readonly #raw: Uint8Array;
  readonly #publicKey: KeyObject;

  /** Throws LetheError(KEY) when `recipient` is not an `age1...` X25519 recipient. */
  constructor(recipient: string) {
    this.#raw = decodeRecipient(recipient);
    this.#recipient = recipient;
    this.#publicKey = x25519PublicKey(this.#raw);
  }

  /**
   * One X25519 stanza wrapping `fileKey` to this recipient, with a fresh ephemeral key.
   * Throws LetheError(KEY) if the recipient is a low-order point (no usable shared secret).
   */
  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const { privateKey, share } = ephemeralKey();
    const secret = sharedSecret(privateKey, this.#publicKey);
    if (secret === null) {
      throw new LetheError(
        ErrorCode.KEY,
        `recipient ${this.#recipient} is a low-order X25519 point; nothing can be encrypted to it`,
      );
    }
    const key = wrapKey(secret, share, this.#raw);
    const cipher = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, {
      authTagLength: TAG_BYTES,
    });
    const body = Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
    return [{ args: [STANZA_TYPE, encodeBase64(share)], body: new Uint8Array(body) }];
  }
}

/** age's X25519 identity on node:crypto; see {@link FastX25519Recipient}. */
export class FastX25519Identity implements Identity {
  /** The `age1...` recipient of this identity. */
  readonly recipient: string;
  readonly #raw: Uint8Array;
  readonly #privateKey: KeyObject;

  /** Throws LetheError(KEY) when `identity` is malformed; the message never contains it. */
  constructor(identity: string) {
    this.#privateKey = x25519PrivateKey(decodeIdentity(identity));
    this.#raw = rawPublicKey(this.#privateKey);
    this.recipient = encodeRecipient(this.#raw);
  }

  /**
   * The file key from the first X25519 stanza this identity opens, or null when none is
   * for it. Throws AgeFailure(MALFORMED) for a malformed X25519 stanza: the age spec makes
   * that a broken header, not a stanza for another key.
   */
  unwrapFileKey(stanzas: Stanza[]): Uint8Array | null {
    for (const stanza of stanzas) {
      if (stanza.args[0] !== STANZA_TYPE) continue;
      const share = parseShare(stanza);
      const secret = sharedSecret(this.#privateKey, share);
      if (secret === null) throw malformed('its ephemeral share is a low-order point');
      const fileKey = open(wrapKey(secret, share, this.#raw), stanza.body);
      if (fileKey !== null) return fileKey;
    }
    return null;
  }
}

function parseShare(stanza: Stanza): Uint8Array {
  const [, encoded, ...extra] = stanza.args;
  if (encoded === undefined || extra.length > 0) throw malformed('wrong number of arguments');
  const share = decodeBase64(encoded);
  if (share === null) throw malformed('its share is not canonical base64');
  if (share.length !== 32) throw malformed(`its share has ${share.length} bytes, not 32`);
  if (stanza.body.length !== FILE_KEY_BYTES + TAG_BYTES) {
    throw malformed(`its body has ${stanza.body.length} bytes, not 32`);
  }
  return share;
}

/** The X25519 shared secret, or null when it is all zeros (a low-order point). */
function sharedSecret(privateKey: KeyObject, publicKey: KeyObject | Uint8Array): Buffer | null {
  let secret: Buffer;
  try {
    const peer = publicKey instanceof Uint8Array ? x25519PublicKey(publicKey) : publicKey;
    secret = diffieHellman({ privateKey, publicKey: peer });
  } catch {
    // OpenSSL refuses to derive an all-zero secret rather than returning it; a share that
    // will not import at all is equally unusable.
    return null;
  }
  return secret.every((b) => b === 0) ? null : secret;
}

function wrapKey(secret: Uint8Array, share: Uint8Array, recipient: Uint8Array): Buffer {
  return hkdfSha256(secret, Buffer.concat([share, recipient]), WRAP_LABEL);
}

/** Opens a stanza body; null when the tag does not verify (the stanza is for another key). */
function open(key: Buffer, body: Uint8Array): Uint8Array | null {
  const decipher = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, {
    authTagLength: TAG_BYTES,
  });
  decipher.setAuthTag(body.subarray(FILE_KEY_BYTES));
  try {
    const fileKey = Buffer.concat([
      decipher.update(body.subarray(0, FILE_KEY_BYTES)),
      decipher.final(),
    ]);
    // A copy: Buffer.concat may hand out a slice of Node's shared allocation pool.
    return new Uint8Array(fileKey);
  } catch {
    return null;
  }
}

function malformed(why: string): AgeFailure {
  return new AgeFailure(AgeProblem.MALFORMED, `an X25519 stanza is malformed: ${why}`);
}
