import { newDecrypter, newEncrypter } from './age.ts';
import { ageError } from './age-errors.ts';
import { fromWebStream, SourceFailure, toWebStream } from './streams.ts';

/** Options of the streaming functions. */
export interface StreamOptions {
  /**
   * Cancels the operation: the output throws LetheError(ABORTED) and the source's `return()`
   * is called. Pass the same signal to the source to interrupt a read already in flight.
   */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Encrypts `source` to every recipient as one binary age v1 file, chunk by chunk (memory is
 * bounded by age's 64 KiB chunks, not by the file). Recipients are checked now: throws
 * LetheError(KEY) for an empty or malformed list. While iterating, errors thrown by `source`
 * pass through unchanged and an abort throws LetheError(ABORTED). Stopping early, erroring
 * or aborting ends the source's iteration.
 */
export function encryptStream(
  source: AsyncIterable<Uint8Array>,
  recipients: readonly string[],
  options: StreamOptions = {},
): AsyncIterable<Uint8Array> {
  const encrypter = newEncrypter(recipients);
  return run('encrypting age stream', source, options.signal, (input) => encrypter.encrypt(input));
}

/**
 * Decrypts an age v1 file from `source` with any of the identities, chunk by chunk.
 * Identities are checked now: throws LetheError(KEY) for an empty or malformed list. While
 * iterating, throws LetheError(CRYPTO) when no identity opens the file or it is malformed,
 * truncated or modified. Each yielded chunk is authenticated, but only a clean end proves
 * that nothing was cut off: treat the output as untrusted until the iteration ends. Errors thrown by `source` pass
 * through unchanged; an abort throws LetheError(ABORTED).
 */
export function decryptStream(
  source: AsyncIterable<Uint8Array>,
  identities: readonly string[],
  options: StreamOptions = {},
): AsyncIterable<Uint8Array> {
  const decrypter = newDecrypter(identities);
  return run('decrypting age stream', source, options.signal, (input) => decrypter.decrypt(input));
}

async function* run(
  doing: string,
  source: AsyncIterable<Uint8Array>,
  signal: AbortSignal | undefined,
  transform: (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>,
): AsyncGenerator<Uint8Array, void, undefined> {
  const input = toWebStream(source, signal);
  try {
    yield* fromWebStream(await transform(input.stream), signal);
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    throw ageError(doing, err);
  } finally {
    // A header that fails to parse leaves the input locked and unread: end it explicitly.
    await input.release();
  }
}
