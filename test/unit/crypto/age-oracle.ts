// A minimal, independent age v1 writer for crafting edge-case files, written from the spec
// (age-encryption.org/v1) straight on node:crypto and sharing no code with src/crypto, so the
// tests never check the implementation against itself. Only the X25519 wrap comes from
// src (FastX25519Recipient), which is tested against the age CLI and library on its own.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { FastX25519Recipient } from '../../../src/crypto/index.ts';

export const CHUNK = 64 * 1024;
export const SEALED_CHUNK = CHUNK + 16;

/** Unpadded standard base64. */
export const b64 = (bytes: Uint8Array): string =>
  Buffer.from(bytes).toString('base64').replace(/=+$/, '');

/** A stanza as header text: `-> args`, then the body in 64-column lines, the last one short. */
export function stanzaText(args: readonly string[], body: Uint8Array): string {
  const encoded = b64(body);
  const lines = [];
  for (let at = 0; at <= encoded.length; at += 64) lines.push(encoded.slice(at, at + 64));
  // A body of a multiple of 48 bytes fills its lines; the loop above then adds the empty one.
  return `-> ${args.join(' ')}\n${lines.map((line) => `${line}\n`).join('')}`;
}

/** An X25519 stanza (as text) wrapping `fileKey` to `recipient`. */
export function x25519StanzaText(recipient: string, fileKey: Uint8Array): string {
  const [stanza] = new FastX25519Recipient(recipient).wrapFileKey(fileKey);
  if (stanza === undefined) throw new Error('no stanza');
  return stanzaText(stanza.args, stanza.body);
}

const hkdf = (ikm: Uint8Array, salt: Uint8Array, info: string): Buffer =>
  Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));

/** The MAC line's base64 for a header that ends in `---`. */
export function macOf(fileKey: Uint8Array, headerToDashes: string | Uint8Array): string {
  const key = hkdf(fileKey, new Uint8Array(), 'header');
  return b64(createHmac('sha256', key).update(headerToDashes).digest());
}

/** 12-byte STREAM nonce: 11-byte big-endian counter, then the last-chunk flag. */
export function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** One chunk to seal; `last` sets the flag, `counter` defaults to the chunk's position. */
export interface ChunkSpec {
  readonly plain: Uint8Array;
  readonly last: boolean;
  readonly counter?: number;
}

/** The chunks age writes for `plain`: 64 KiB each, the last flagged, never an extra empty one. */
export function chunksOf(plain: Uint8Array): ChunkSpec[] {
  const chunks: ChunkSpec[] = [];
  let from = 0;
  do {
    const to = Math.min(from + CHUNK, plain.length);
    chunks.push({ plain: plain.subarray(from, to), last: to === plain.length });
    from = to;
  } while (from < plain.length);
  return chunks;
}

/** Seals the chunks as a payload with the key derived from `fileKey` and `nonce`. */
export function sealChunks(
  fileKey: Uint8Array,
  nonce: Uint8Array,
  chunks: readonly ChunkSpec[],
): Buffer {
  const key = hkdf(fileKey, nonce, 'payload');
  return Buffer.concat(
    chunks.map(({ plain, last, counter }, index) => {
      const cipher = createCipheriv('chacha20-poly1305', key, chunkNonce(counter ?? index, last), {
        authTagLength: 16,
      });
      return Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    }),
  );
}

/**
 * Opens sealed chunk `index` of a payload (flag as given), or returns null. For checking what
 * the implementation wrote, chunk by chunk.
 */
export function openChunk(
  fileKey: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  index: number,
  last: boolean,
): Buffer | null {
  const key = hkdf(fileKey, nonce, 'payload');
  const decipher = createDecipheriv('chacha20-poly1305', key, chunkNonce(index, last), {
    authTagLength: 16,
  });
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  try {
    return Buffer.concat([
      decipher.update(sealed.subarray(0, sealed.length - 16)),
      decipher.final(),
    ]);
  } catch {
    return null;
  }
}

/** A crafted file: header text up to `---` (MAC computed for it), nonce, payload. */
export interface Crafted {
  readonly fileKey: Uint8Array;
  readonly nonce: Uint8Array;
  readonly file: Buffer;
}

/**
 * Builds a file from header text ending in `---`: appends ` <mac>\n` (or `macLine` instead,
 * which must include the newline), a random nonce and the sealed chunks.
 */
export function craftFile(
  fileKey: Uint8Array,
  headerToDashes: string,
  chunks: readonly ChunkSpec[],
  macLine?: string,
): Crafted {
  const nonce = randomBytes(16);
  const header = Buffer.from(
    headerToDashes + (macLine ?? ` ${macOf(fileKey, headerToDashes)}\n`),
    'latin1',
  );
  return {
    fileKey,
    nonce,
    file: Buffer.concat([header, nonce, sealChunks(fileKey, nonce, chunks)]),
  };
}

/** Where the header of an age file ends (just past the MAC line's newline). */
export function headerLength(file: Uint8Array): number {
  const text = Buffer.from(file).toString('latin1');
  const dashes = text.indexOf('\n---');
  const end = text.indexOf('\n', dashes + 1);
  if (dashes < 0 || end < 0) throw new Error('no header end');
  return end + 1;
}
