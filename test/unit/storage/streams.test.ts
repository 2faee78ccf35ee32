import { createHash } from 'node:crypto';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { abortable, chunksOf, collect, Tally } from '../../../src/storage/streams.ts';

async function* from(chunks: readonly string[]): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) {
    await tick();
    yield new Uint8Array(Buffer.from(chunk));
  }
}

describe('Tally', () => {
  it('counts and hashes what passes through, unchanged', async () => {
    const tally = new Tally();
    const out = await collect(tally.tap(from(['hello ', '', 'world'])));
    expect(Buffer.from(out).toString()).toBe('hello world');
    expect(tally.result()).toEqual({
      size: 11,
      sha256: createHash('sha256').update('hello world').digest('hex'),
    });
  });
});

describe('collect', () => {
  it('stops reading at the limit and closes the source', async () => {
    let closed = false;
    let pulled = 0;
    const source = (async function* () {
      try {
        for (;;) {
          pulled += 1;
          await tick();
          yield new Uint8Array(4).fill(pulled);
        }
      } finally {
        closed = true;
      }
    })();
    const got = await collect(source, 6);
    expect(Array.from(got)).toEqual([1, 1, 1, 1, 2, 2]);
    expect(pulled).toBe(2);
    expect(closed).toBe(true);
  });

  it('returns everything without a limit', async () => {
    expect(Buffer.from(await collect(chunksOf(new Uint8Array([1, 2, 3])))).toJSON().data).toEqual([
      1, 2, 3,
    ]);
  });
});

describe('abortable', () => {
  it('passes a source through when no signal is given', async () => {
    const out = await collect(abortable(from(['a', 'b']), undefined, 'test'));
    expect(Buffer.from(out).toString()).toBe('ab');
  });

  it('throws ABORTED at once even while the source is stuck, then closes the source', async () => {
    const controller = new AbortController();
    let returned = false;
    const stuck: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise<IteratorResult<Uint8Array>>(() => undefined),
        return: () => {
          returned = true;
          return Promise.resolve({ done: true, value: undefined });
        },
      }),
    };
    const reading = collect(abortable(stuck, controller.signal, 'read the body'));
    setTimeout(() => controller.abort(), 20);
    const err: unknown = await reading.catch((e: unknown) => e);
    expect(isLetheError(err, ErrorCode.ABORTED)).toBe(true);
    expect((err as Error).message).toBe('read the body: cancelled');
    expect(returned).toBe(true);
  });

  it('throws ABORTED before reading when the signal has already fired', async () => {
    let pulled = false;
    const source = (async function* () {
      pulled = true;
      await tick();
      yield new Uint8Array(1);
    })();
    const err: unknown = await collect(abortable(source, AbortSignal.abort(), 'x')).catch(
      (e: unknown) => e,
    );
    expect(isLetheError(err, ErrorCode.ABORTED)).toBe(true);
    expect(pulled).toBe(false);
  });
});
