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
 * AgeFailure(PAYLOAD) when it is empty, ends without a final chunk, has data after its final
 * chunk, ends in an empty chunk after others, or a chunk fails authentication; then nothing
 * is returned. It decides chunk by chunk exactly as {@link PayloadOpener}, so both readers
 * accept the same payloads and give the same reason for refusing one.
 */
export function openPayload(key: Uint8Array, sealed: Uint8Array): Uint8Array {
  const reader = new ChunkReader(key);
  const tail = sealed.length % SEALED_CHUNK_BYTES;
  const full = (sealed.length - tail) / SEALED_CHUNK_BYTES;
  const out = Buffer.allocUnsafeSlow(full * CHUNK_BYTES + Math.max(0, tail - TAG_BYTES));
  let at = 0;
  try {
    for (let from = 0; from < sealed.length; from += SEALED_CHUNK_BYTES) {
      at += reader.open(sealed.subarray(from, from + SEALED_CHUNK_BYTES), out, at);
    }
    reader.end();
  } catch (err) {
    // The chunks opened so far are plaintext that is not being returned.
    out.fill(0);
    throw err;
  }
  return new Uint8Array(out.buffer, out.byteOffset, at);
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
 * Opens a payload pushed in pieces of any size, holding at most one sealed chunk. Each chunk
 * is opened, and its plaintext yielded, as soon as it is complete, as age's reference reader
 * releases it; what is held when the input ends is the final chunk. Everything yielded has
 * been authenticated, but only {@link finish} returning proves the payload whole.
 */
export class PayloadOpener {
  readonly #reader: ChunkReader;
  readonly #pending = Buffer.allocUnsafeSlow(SEALED_CHUNK_BYTES);
  #used = 0;

  constructor(key: Uint8Array) {
    this.#reader = new ChunkReader(key);
  }

  /**
   * Takes the next sealed bytes and yields the plaintext of each chunk they complete. Throws
   * AgeFailure(PAYLOAD) when a chunk fails authentication or bytes follow the final chunk.
   */
  *push(sealed: Uint8Array): Generator<Uint8Array, void, undefined> {
    let input = sealed;
    while (input.length > 0) {
      this.#reader.expectMore();
      if (this.#used === 0 && input.length >= SEALED_CHUNK_BYTES) {
        // A whole chunk in the input: opened from it, not copied.
        yield this.#open(input.subarray(0, SEALED_CHUNK_BYTES));
        input = input.subarray(SEALED_CHUNK_BYTES);
        continue;
      }
      const taken = Math.min(SEALED_CHUNK_BYTES - this.#used, input.length);
      this.#pending.set(input.subarray(0, taken), this.#used);
      this.#used += taken;
      input = input.subarray(taken);
      if (this.#used === SEALED_CHUNK_BYTES) {
        this.#used = 0;
        yield this.#open(this.#pending);
      }
    }
  }

  /**
   * Opens what is held as the final chunk and checks that the payload ended there. Call
   * once, when the input has ended. Throws AgeFailure(PAYLOAD) when there is no chunk at all
   * or no final chunk (the payload is truncated), or the held chunk is cut short, is empty
   * after other chunks, or fails authentication.
   */
  finish(): Uint8Array {
    const held = this.#pending.subarray(0, this.#used);
    this.#used = 0;
    const last = held.length > 0 ? this.#open(held) : new Uint8Array();
    this.#reader.end();
    return last;
  }

  #open(sealed: Uint8Array): Uint8Array {
    const out = Buffer.allocUnsafeSlow(Math.max(0, sealed.length - TAG_BYTES));
    const length = this.#reader.open(sealed, out, 0);
    return new Uint8Array(out.buffer, out.byteOffset, length);
  }
}

/**
 * The decisions of reading STREAM, one sealed chunk after another, shared by both readers.
 * Which chunk is the final one cannot be told from where the input ends (a file may be cut
 * at a chunk boundary, or have bytes appended), so it is read from the chunk itself, as age's
 * reference reader does: a chunk shorter than a full one can only be final, and a full one is
 * opened as a middle chunk and, failing that, as the final one. A chunk is thus refused only
 * when it authenticates as neither, and a payload that is cut after a middle chunk, or has
 * bytes after its final chunk, is refused after its authentic chunks, not blaming one of them.
 */
class ChunkReader {
  readonly #key: Uint8Array;
  readonly #nonce = Buffer.alloc(NONCE_BYTES);
  /** Chunks opened so far. */
  #count = 0;
  #ended = false;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  /** Throws AgeFailure(PAYLOAD) once the final chunk has been read: nothing may follow it. */
  expectMore(): void {
    if (this.#ended) throw payloadFailure(`data follows its final chunk, chunk ${this.#count}`);
  }

  /**
   * Opens the next chunk, `sealed` (a full one, or a shorter one that ends the input), into
   * `out` at `at`, which must have room for its plaintext. Returns the plaintext bytes
   * written; nothing is written unless the chunk authenticates. Throws AgeFailure(PAYLOAD)
   * when it does not, or when it cannot be a chunk in this place.
   */
  open(sealed: Uint8Array, out: Uint8Array, at: number): number {
    this.expectMore();
    const index = this.#count;
    const name = `chunk ${index + 1}`;
    let final = sealed.length < SEALED_CHUNK_BYTES;
    if (final) {
      if (sealed.length < TAG_BYTES) throw payloadFailure(`${name} is cut short`);
      // Only the empty plaintext is sealed as an empty chunk; any other ends in a full one.
      if (sealed.length === TAG_BYTES && index > 0) {
        throw payloadFailure(`its final chunk, ${name}, is empty`);
      }
    } else if (!open(this.#key, setNonce(this.#nonce, index, false), sealed, out, at)) {
      final = true;
    }
    if (final && !open(this.#key, setNonce(this.#nonce, index, true), sealed, out, at)) {
      throw payloadFailure(`${name} failed authentication`);
    }
    this.#ended = final;
    this.#count++;
    return sealed.length - TAG_BYTES;
  }

  /** Throws AgeFailure(PAYLOAD) unless the chunks read so far ended with the final one. */
  end(): void {
    if (this.#ended) return;
    if (this.#count === 0) throw payloadFailure('it ends before its first chunk');
    throw payloadFailure(
      `it ends after chunk ${this.#count} without a final chunk (cut at a chunk boundary)`,
    );
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
 * Opens one sealed chunk into `out` at `at` with this nonce. Returns false, having written
 * nothing, when it does not authenticate.
 */
function open(
  key: Uint8Array,
  nonce: Buffer,
  sealed: Uint8Array,
  out: Uint8Array,
  at: number,
): boolean {
  const bodyLength = sealed.length - TAG_BYTES;
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAuthTag(sealed.subarray(bodyLength));
  const body = decipher.update(sealed.subarray(0, bodyLength));
  try {
    decipher.final();
  } catch {
    body.fill(0);
    return false;
  }
  out.set(body, at);
  return true;
}

function payloadFailure(detail: string): AgeFailure {
  return new AgeFailure(AgeProblem.PAYLOAD, detail);
}
