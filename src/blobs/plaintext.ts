import { ErrorCode, LetheError } from '../errors/index.ts';
import { locationProblem } from './location.ts';

/**
 * A blob cell's plaintext: a header naming the blob's location, then the file's bytes.
 *
 *     "lethe.blob.v1\n" ‖ percent-encoded location ‖ "\n" ‖ file bytes
 *
 * The location travels inside the sealed cell, so a restore needs nothing but the cell to
 * put the file back where it was, and the location (which may hold a user's name) is as
 * secret as the file. Percent-encoding keeps the header one line whatever the location holds.
 */
export const BLOB_MAGIC = 'lethe.blob.v1\n';

/** Longest header a reader accepts: the magic, a 1024-byte location percent-encoded (×3), and `\n`. */
export const MAX_BLOB_HEADER_BYTES = BLOB_MAGIC.length + 3 * 1024 + 1;

/** The header bytes for `location`. */
export function blobHeader(location: string): Buffer {
  return Buffer.from(`${BLOB_MAGIC}${encodeURIComponent(location)}\n`, 'utf8');
}

/**
 * Splits a blob cell's plaintext stream into its location and the file's bytes. Reads at
 * most {@link MAX_BLOB_HEADER_BYTES} before the header must have ended. Throws INTEGRITY for
 * a header that is not one, or a location that is not a relative key (a sealed cell is
 * authenticated, so this means a bug or a key compromise, never a stray byte).
 */
export async function splitBlobPlaintext(
  plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<{ location: string; body: AsyncGenerator<Uint8Array> }> {
  const iterator = (async function* (): AsyncGenerator<Uint8Array> {
    for await (const chunk of plaintext) yield chunk;
  })();
  let head = Buffer.alloc(0);
  let newline = -1;
  while (newline === -1) {
    const next = await iterator.next();
    if (next.done === true) throw new LetheError(ErrorCode.INTEGRITY, 'a blob cell ends inside its header');
    head = Buffer.concat([head, next.value]);
    newline = head.indexOf(0x0a, BLOB_MAGIC.length);
    if (newline === -1 && head.length > MAX_BLOB_HEADER_BYTES) break;
  }
  if (newline === -1 || head.subarray(0, BLOB_MAGIC.length).toString('utf8') !== BLOB_MAGIC) {
    throw new LetheError(ErrorCode.INTEGRITY, `a blob cell does not start with the ${JSON.stringify(BLOB_MAGIC.trim())} header`);
  }
  let location: string;
  try {
    location = decodeURIComponent(head.subarray(BLOB_MAGIC.length, newline).toString('utf8'));
  } catch {
    throw new LetheError(ErrorCode.INTEGRITY, 'a blob cell header holds a malformed location');
  }
  const problem = locationProblem(location);
  if (problem !== null) throw new LetheError(ErrorCode.INTEGRITY, `a blob cell names location ${JSON.stringify(location)}, which ${problem}`);
  const rest = head.subarray(newline + 1);
  async function* body(): AsyncGenerator<Uint8Array> {
    if (rest.length > 0) yield rest;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return;
      yield next.value;
    }
  }
  return { location, body: body() };
}
