// Reading the caller's async iterable for the streaming age functions: one chunk per
// request, interruptible by an AbortSignal, and ended exactly once.
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';

/**
 * Wraps an error thrown by the caller's source, so that it is rethrown unchanged at the end
 * of the pipeline and not mislabelled as a crypto failure.
 */
export class SourceFailure extends Error {
  override readonly name = 'SourceFailure';
  constructor(readonly error: unknown) {
    super('the source of an age stream failed', { cause: error });
  }
}

/** Pulls chunks from an async iterable, one per {@link next} call, never reading ahead. */
export class SourceReader {
  readonly #source: AsyncIterable<Uint8Array>;
  readonly #signal: AbortSignal | undefined;
  #iterator: AsyncIterator<Uint8Array> | undefined;
  #ended = false;

  constructor(source: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined) {
    this.#source = source;
    this.#signal = signal;
  }

  /**
   * The next chunk, or null when the source has ended. Throws LetheError(ABORTED) as soon as
   * the signal fires, even while the source is stalled in a read, and {@link SourceFailure}
   * when the source throws.
   */
  async next(): Promise<Uint8Array | null> {
    throwIfAborted(this.#signal, 'reading age stream');
    if (this.#ended) return null;
    this.#iterator ??= this.#source[Symbol.asyncIterator]();
    let next: IteratorResult<Uint8Array>;
    try {
      next = await untilAborted(this.#iterator.next(), this.#signal);
    } catch (err) {
      if (err instanceof LetheError && err.code === ErrorCode.ABORTED) throw err;
      this.#ended = true;
      throw new SourceFailure(err);
    }
    if (next.done === true) {
      this.#ended = true;
      return null;
    }
    return next.value;
  }

  /**
   * Ends the source's iteration (calls its `return()`) unless it already ended. After an
   * abort it does not wait for a source stalled in a read. Never throws.
   */
  async release(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    const iterator = (this.#iterator ??= this.#source[Symbol.asyncIterator]());
    const closing = (async () => {
      await iterator.return?.();
    })();
    await untilAborted(closing, this.#signal).catch(() => undefined);
  }
}

/** Rejects with LetheError(ABORTED) as soon as `signal` fires, whatever `promise` does. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void =>
      reject(new LetheError(ErrorCode.ABORTED, 'reading age stream: cancelled'));
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    void promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
