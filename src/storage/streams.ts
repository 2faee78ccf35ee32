import { createHash } from 'node:crypto';
import { addAbortSignal, type Readable } from 'node:stream';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { Tripwire } from '../util/tripwire.ts';

/** A put body as a stream of chunks, whichever form the caller passed. */
export async function* chunksOf(
  body: AsyncIterable<Uint8Array> | Uint8Array,
): AsyncGenerator<Uint8Array> {
  if (body instanceof Uint8Array) yield body;
  else yield* body;
}

/** Counts and hashes the bytes that pass through {@link Tally.tap}, without an extra pass. */
export class Tally {
  private readonly hash = createHash('sha256');
  private size = 0;

  async *tap(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      this.hash.update(chunk);
      this.size += chunk.byteLength;
      yield chunk;
    }
  }

  /** Byte count and sha256 hex; call once, after the source has ended. */
  result(): { size: number; sha256: string } {
    return { size: this.size, sha256: this.hash.digest('hex') };
  }
}

/**
 * Passes `source` through until `signal` fires, then throws ABORTED at once, even while
 * the source is blocked in next() (a stalled database cursor must not delay a cancel).
 */
export async function* abortable<T>(
  source: AsyncIterable<T>,
  signal: AbortSignal | undefined,
  doing: string,
): AsyncGenerator<T> {
  if (signal === undefined) {
    yield* source;
    return;
  }
  throwIfAborted(signal, doing);
  const iterator = source[Symbol.asyncIterator]();
  let onAbort = (): void => undefined;
  // Not a race against one long-lived "aborted" promise: that would keep every chunk that
  // passed through alive until the stream ends (see Tripwire).
  const wire = new Tripwire((trip) => {
    onAbort = () => trip(new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`));
  });
  signal.addEventListener('abort', onAbort, { once: true });
  let finished = false;
  try {
    for (;;) {
      throwIfAborted(signal, doing);
      const step = await wire.wait(iterator.next());
      if (step.done === true) {
        finished = true;
        return;
      }
      yield step.value;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    // Not awaited: a source stuck in next() would hold the cancel up; it closes once it settles.
    if (!finished) void Promise.resolve(iterator.return?.()).catch(() => undefined);
  }
}

/**
 * The chunks of `source` as one plain Uint8Array; with `limit`, stops reading (closing the
 * source) once it has that many bytes and returns at most `limit`.
 */
export async function collect(
  source: AsyncIterable<Uint8Array>,
  limit = Number.POSITIVE_INFINITY,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of source) {
    chunks.push(chunk);
    total += chunk.byteLength;
    if (total >= limit) break;
  }
  const joined = Buffer.concat(chunks);
  const end = Math.min(joined.byteLength, limit);
  return new Uint8Array(joined.buffer, joined.byteOffset, end);
}

/** Throws INTERNAL unless offset and length are non-negative safe integers: a caller bug. */
export function assertRangeArguments(offset: number, length: number): void {
  for (const [name, value] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new LetheError(
        ErrorCode.INTERNAL,
        `getRange: ${name} must be a non-negative safe integer, got ${String(value)}`,
      );
    }
  }
}

/** The INTEGRITY error for a range that runs past the end of an object. */
export function rangePastEnd(
  where: string,
  offset: number,
  length: number,
  size: number | undefined,
): LetheError {
  const actual = size === undefined ? '' : ` (object is ${size} bytes)`;
  return new LetheError(
    ErrorCode.INTEGRITY,
    `${where}: wanted bytes ${offset}..${offset + length - 1} but the object ends sooner${actual}; ` +
      'the object is truncated or the index pointing into it is wrong',
    { details: { offset, length, ...(size === undefined ? {} : { size }) } },
  );
}

/**
 * A Node readable's chunks as an async iterable: the signal aborts the stream, a stream
 * error is converted once by `convert`, and the stream is destroyed however iteration
 * ends (so a consumer that stops early releases the file or socket).
 */
export async function* readableChunks(
  stream: Readable,
  signal: AbortSignal | undefined,
  convert: (err: unknown) => Error,
): AsyncGenerator<Uint8Array> {
  if (signal !== undefined) addAbortSignal(signal, stream);
  try {
    for await (const chunk of stream) yield chunk as Uint8Array;
  } catch (err) {
    throw convert(err);
  } finally {
    stream.destroy();
  }
}
