// The age v1 payload (age-encryption.org/v1, "Payload"): the STREAM construction over
// ChaCha20-Poly1305 with 64 KiB chunks, on node:crypto (OpenSSL).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { AgeFailure, AgeProblem } from './age-errors.ts';
import { hkdfSha256 } from './hkdf.ts';

/** Plaintext bytes per chunk; every chunk but the last is exactly this long. */
export const CHUNK_BYTES = 64 * 1024;
const TAG_BYTES = 16;
const SEALED_CHUNK_BYTES = CHUNK_BYTES + TAG_BYTES;
const PAYLOAD_LABEL = 'payload';
const NONCE_BYTES = 12;

/** The payload key: HKDF-SHA-256 of the file key, salted with the file's payload nonce. */
export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  return hkdfSha256(fileKey, nonce, PAYLOAD_LABEL);
}

/**
 * Bytes of the sealed payload of `plainLength` bytes: one tag per chunk, and at least one
 * chunk (an empty plaintext is one empty final chunk).
 */
export function sealedLength(plainLength: number): number {
  return plainLength + Math.max(1, Math.ceil(plainLength / CHUNK_BYTES)) * TAG_BYTES;
}

/**
 * Seals all of `plain` as a payload into `out` at `at`, which must have room for
 * {@link sealedLength} bytes. A plaintext of a multiple of 64 KiB ends with a full final
 * chunk, not an empty one, as age writes it.
 */
export function sealPayload(key: Uint8Array, plain: Uint8Array, out: Uint8Array, at: number): void {
  const nonce = Buffer.alloc(NONCE_BYTES);
  let from = 0;
  let counter = 0;
  do {
    const to = Math.min(from + CHUNK_BYTES, plain.length);
    at += seal(
      key,
      setNonce(nonce, counter++, to === plain.length),
      plain.subarray(from, to),
      out,
      at,
    );
    from = to;
  } while (from < plain.length);
}

/**
 * Opens a whole payload and returns the plaintext in a buffer of its own. Throws
 * AgeFailure(PAYLOAD) when it is empty or truncated, has data after its final chunk, ends in
 * an empty chunk after others, or any chunk fails authentication.
 */
export function openPayload(key: Uint8Array, sealed: Uint8Array): Uint8Array {
  if (sealed.length === 0) throw payloadFailure('it ends before its first chunk');
  const chunks = Math.ceil(sealed.length / SEALED_CHUNK_BYTES);
  const lastLength = sealed.length - (chunks - 1) * SEALED_CHUNK_BYTES;
  checkFinalChunk(lastLength, chunks - 1);
  const out = Buffer.allocUnsafeSlow(sealed.length - chunks * TAG_BYTES);
  const nonce = Buffer.alloc(NONCE_BYTES);
  for (let index = 0, at = 0; index < chunks; index++) {
    const from = index * SEALED_CHUNK_BYTES;
    const chunk = sealed.subarray(from, from + SEALED_CHUNK_BYTES);
    at += open(key, setNonce(nonce, index, index === chunks - 1), chunk, out, at, index);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * Seals a payload pushed in pieces of any size, holding at most one chunk: a full chunk is
 * sealed only once more plaintext shows it is not the last.
 */
export class PayloadSealer {
  readonly #key: Uint8Array;
  readonly #nonce = Buffer.alloc(NONCE_BYTES);
  readonly #pending = Buffer.allocUnsafeSlow(CHUNK_BYTES);
  #used = 0;
  #counter = 0;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  /** Takes the next plaintext and yields each chunk it completes, sealed. */
  *push(plain: Uint8Array): Generator<Uint8Array, void, undefined> {
    let input = plain;
    while (input.length > 0) {
      if (this.#used === CHUNK_BYTES) {
        yield this.#seal(this.#pending, false);
        this.#used = 0;
      }
      if (this.#used === 0 && input.length > CHUNK_BYTES) {
        // A whole chunk with more after it: sealed straight from the input, not copied.
        yield this.#seal(input.subarray(0, CHUNK_BYTES), false);
        input = input.subarray(CHUNK_BYTES);
        continue;
      }
      const taken = Math.min(CHUNK_BYTES - this.#used, input.length);
      this.#pending.set(input.subarray(0, taken), this.#used);
      this.#used += taken;
      input = input.subarray(taken);
    }
  }

  /** Seals what is held as the final chunk. Call once, after the last {@link push}. */
  finish(): Uint8Array {
    const last = this.#seal(this.#pending.subarray(0, this.#used), true);
    this.#pending.fill(0);
    return last;
  }

  #seal(plain: Uint8Array, last: boolean): Uint8Array {
    const out = Buffer.allocUnsafeSlow(plain.length + TAG_BYTES);
    seal(this.#key, setNonce(this.#nonce, this.#counter++, last), plain, out, 0);
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

/**
 * Opens a payload pushed in pieces of any size, holding at most one sealed chunk: a full
 * chunk is opened as a middle chunk only once more bytes arrive, and what is held when the
 * input ends is the final chunk. Everything yielded has been authenticated.
 */
export class PayloadOpener {
  readonly #key: Uint8Array;
  readonly #nonce = Buffer.alloc(NONCE_BYTES);
  readonly #pending = Buffer.allocUnsafeSlow(SEALED_CHUNK_BYTES);
  #used = 0;
  #counter = 0;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  /**
   * Takes the next sealed bytes and yields the plaintext of each chunk they show is not the
   * last. Throws AgeFailure(PAYLOAD) when a chunk fails authentication.
   */
  *push(sealed: Uint8Array): Generator<Uint8Array, void, undefined> {
    let input = sealed;
    while (input.length > 0) {
      if (this.#used === SEALED_CHUNK_BYTES) {
        yield this.#open(this.#pending, false);
        this.#used = 0;
      }
      if (this.#used === 0 && input.length > SEALED_CHUNK_BYTES) {
        yield this.#open(input.subarray(0, SEALED_CHUNK_BYTES), false);
        input = input.subarray(SEALED_CHUNK_BYTES);
        continue;
      }
      const taken = Math.min(SEALED_CHUNK_BYTES - this.#used, input.length);
      this.#pending.set(input.subarray(0, taken), this.#used);
      this.#used += taken;
      input = input.subarray(taken);
    }
  }

  /**
   * Opens what is held as the final chunk. Call once, when the input has ended. Throws
   * AgeFailure(PAYLOAD) when there is no final chunk (the payload is truncated), it is empty
   * after other chunks, or it fails authentication (also the case for data after it).
   */
  finish(): Uint8Array {
    if (this.#counter === 0 && this.#used === 0) {
      throw payloadFailure('it ends before its first chunk');
    }
    checkFinalChunk(this.#used, this.#counter);
    return this.#open(this.#pending.subarray(0, this.#used), true);
  }

  #open(sealed: Uint8Array, last: boolean): Uint8Array {
    const out = Buffer.allocUnsafeSlow(sealed.length - TAG_BYTES);
    const index = this.#counter++;
    open(this.#key, setNonce(this.#nonce, index, last), sealed, out, 0, index);
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

/** Rejects a final chunk of `length` sealed bytes that follows `before` chunks. */
function checkFinalChunk(length: number, before: number): void {
  if (length < TAG_BYTES) throw payloadFailure(`chunk ${before + 1} is cut short`);
  if (length === TAG_BYTES && before > 0) {
    throw payloadFailure(`its final chunk, ${before + 1}, is empty`);
  }
}

/** The chunk nonce: an 11-byte big-endian counter, then 1 for the last chunk, else 0. */
function setNonce(nonce: Buffer, counter: number, last: boolean): Buffer {
  // Bytes 0-4 stay zero: 2^48 chunks is 16 EiB.
  nonce.writeUIntBE(counter, 5, 6);
  nonce[NONCE_BYTES - 1] = last ? 1 : 0;
  return nonce;
}

/** Seals one chunk into `out` at `at`; returns the bytes written. */
function seal(
  key: Uint8Array,
  nonce: Buffer,
  plain: Uint8Array,
  out: Uint8Array,
  at: number,
): number {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  const body = cipher.update(plain);
  cipher.final();
  out.set(body, at);
  out.set(cipher.getAuthTag(), at + body.length);
  return body.length + TAG_BYTES;
}

/**
 * Opens one sealed chunk into `out` at `at`; returns the bytes written. Nothing is written
 * unless the chunk authenticates. Throws AgeFailure(PAYLOAD) naming chunk `index` otherwise.
 */
function open(
  key: Uint8Array,
  nonce: Buffer,
  sealed: Uint8Array,
  out: Uint8Array,
  at: number,
  index: number,
): number {
  const bodyLength = sealed.length - TAG_BYTES;
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAuthTag(sealed.subarray(bodyLength));
  const body = decipher.update(sealed.subarray(0, bodyLength));
  try {
    decipher.final();
  } catch {
    body.fill(0);
    throw payloadFailure(`chunk ${index + 1} failed authentication`);
  }
  out.set(body, at);
  return bodyLength;
}

function payloadFailure(detail: string): AgeFailure {
  return new AgeFailure(AgeProblem.PAYLOAD, detail);
}
