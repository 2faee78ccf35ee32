// The one place where lethe converts between async iterables (Node streams, generators) and
// the Web Streams the age library works on.
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';

/**
 * Wraps an error thrown by the caller's source so it can cross the age library's stream
 * pipeline and be rethrown unchanged at the other end, not mislabelled as a crypto failure.
 */
export class SourceFailure extends Error {
  override readonly name = 'SourceFailure';
  constructor(readonly error: unknown) {
    super('the source of an age stream failed', { cause: error });
  }
}

/** A Web ReadableStream over an async iterable, plus a way to release the iterable. */
export interface WebSource {
  readonly stream: ReadableStream<Uint8Array>;
  /** Ends the source's iteration (calls its `return()`) unless it already ended. Never throws. */
  release(): Promise<void>;
}

/**
 * Adapts `source` to a pull-based ReadableStream: one chunk is read from the source only when
 * the consumer asks for one, so memory stays bounded. Errors from the source surface as
 * {@link SourceFailure}; an abort of `signal` errors the stream with LetheError(ABORTED).
 */
export function toWebStream(source: AsyncIterable<Uint8Array>, signal?: AbortSignal): WebSource {
  let iterator: AsyncIterator<Uint8Array> | undefined;
  let ended = false;
  const release = async (): Promise<void> => {
    if (ended) return;
    ended = true;
    iterator ??= source[Symbol.asyncIterator]();
    // After an abort, do not wait on a source that may be stalled in a read.
    await untilAborted(Promise.resolve(iterator.return?.()), signal).catch(() => undefined);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        throwIfAborted(signal, 'reading age stream');
        iterator ??= source[Symbol.asyncIterator]();
        let next: IteratorResult<Uint8Array>;
        try {
          next = await untilAborted(iterator.next(), signal);
        } catch (err) {
          if (err instanceof LetheError && err.code === ErrorCode.ABORTED) throw err;
          ended = true;
          throw new SourceFailure(err);
        }
        if (next.done === true) {
          ended = true;
          controller.close();
        } else {
          controller.enqueue(next.value);
        }
      },
      cancel: release,
    },
    { highWaterMark: 0 },
  );
  return { stream, release };
}

/**
 * Reads a Web ReadableStream as an async generator. Stopping early (break, throw, abort)
 * cancels the stream, which releases everything upstream. An abort of `signal` makes the
 * generator throw LetheError(ABORTED).
 */
export async function* fromWebStream(
  stream: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = stream.getReader();
  // Cancelling settles a pending read(), so an abort interrupts a stalled pipeline.
  const onAbort = (): void => void reader.cancel().catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  let finished = false;
  try {
    for (;;) {
      throwIfAborted(signal, 'reading age stream');
      const next = await reader.read();
      throwIfAborted(signal, 'reading age stream');
      if (next.done) {
        finished = true;
        return;
      }
      yield next.value;
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
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
