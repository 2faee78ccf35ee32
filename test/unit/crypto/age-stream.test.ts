import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  generateKeyPair,
} from '../../../src/crypto/index.ts';
import { AgeProblem, ageProblemOf } from '../../../src/crypto/age-errors.ts';
import {
  chunked,
  chunkSizes,
  collect,
  expectSameBytes,
  letheError,
  plaintexts,
} from './support.ts';

const alice = generateKeyPair();
const eve = generateKeyPair();
const CHUNK = 64 * 1024;

/** A lazy source of `count` chunks that records how far it was read and whether it was closed. */
function trackedSource(count: number, size = CHUNK) {
  const state = { yielded: 0, closed: false };
  async function* generate(): AsyncGenerator<Uint8Array> {
    try {
      for (; state.yielded < count;) {
        state.yielded++;
        await Promise.resolve();
        yield new Uint8Array(size).fill(state.yielded % 251);
      }
    } finally {
      state.closed = true;
    }
  }
  return { state, source: generate() };
}

const idle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 30));

describe('encryptStream / decryptStream', () => {
  it('round-trip any plaintext under any chunking, and agree with the byte functions', async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, chunkSizes, chunkSizes, async (plain, inSizes, outSizes) => {
        const cipher = await collect(encryptStream(chunked(plain, inSizes), [alice.recipient]));
        expectSameBytes(await decryptBytes(cipher, [alice.identity]), plain);
        const back = await collect(decryptStream(chunked(cipher, outSizes), [alice.identity]));
        expectSameBytes(back, plain);
        const fromBytes = await encryptBytes(plain, [alice.recipient]);
        expectSameBytes(
          await collect(decryptStream(chunked(fromBytes, outSizes), [alice.identity])),
          plain,
        );
      }),
      { numRuns: 40 },
    );
  });

  it('throws CRYPTO for a truncated or modified stream, after the good chunks', async () => {
    const plain = new Uint8Array(3 * CHUNK + 100).map((_, i) => i);
    const cipher = await encryptBytes(plain, [alice.recipient]);
    const cases = [
      cipher.subarray(0, cipher.length - 1),
      cipher.subarray(0, cipher.length - 116), // whole final chunk missing
      cipher.subarray(0, cipher.length - 100 - 16 - (CHUNK + 16)), // cut at a chunk boundary
      Uint8Array.from(cipher, (b, i) => (i === cipher.length - 5 ? b ^ 1 : b)),
    ];
    for (const bad of cases) {
      let received = 0;
      const err = await letheError(async () => {
        for await (const chunk of decryptStream(chunked(bad, [1000]), [alice.identity])) {
          received += chunk.length;
        }
      }, ErrorCode.CRYPTO);
      expect(err.message).toMatch(/truncated or was modified/);
      expect(received).toBeLessThan(plain.length);
    }
  });

  it('throws CRYPTO for a wrong identity, and closes the source', async () => {
    const cipher = await encryptBytes(new Uint8Array(10), [alice.recipient]);
    let closed = false;
    async function* source(): AsyncGenerator<Uint8Array> {
      try {
        yield* chunked(cipher, [7]);
        yield new Uint8Array(10_000);
      } finally {
        closed = true;
      }
    }
    const err = await letheError(
      () => collect(decryptStream(source(), [eve.identity])),
      ErrorCode.CRYPTO,
    );
    expect(err.message).toMatch(/none of the identities/);
    expect(closed).toBe(true);
  });

  it('reads the source only as fast as the consumer takes output (bounded memory)', async () => {
    const { state, source } = trackedSource(1000); // 64 MiB if it were all read
    let taken = 0;
    for await (const chunk of encryptStream(source, [alice.recipient])) {
      taken += chunk.length;
      if (taken > 2 * CHUNK) break;
      await idle(); // room for any read-ahead to happen
    }
    expect(state.yielded).toBeGreaterThanOrEqual(2);
    expect(state.yielded).toBeLessThan(10);
    expect(state.closed).toBe(true);
  });

  it('decrypts with bounded read-ahead too', async () => {
    const cipher = await collect(encryptStream(trackedSource(40).source, [alice.recipient]));
    let read = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const chunk of chunked(cipher, [CHUNK])) {
        read++;
        yield chunk;
      }
    }
    const output = decryptStream(counted(), [alice.identity])[Symbol.asyncIterator]();
    await output.next();
    await idle();
    await output.next();
    await idle();
    await output.return?.();
    expect(read).toBeGreaterThanOrEqual(2);
    expect(read).toBeLessThan(8);
  });

  it('passes errors of the source through unchanged', async () => {
    const failure = new LetheError(ErrorCode.STORAGE, 'bucket went away');
    const plainFailure = new Error('socket hang up');
    for (const thrown of [failure, plainFailure]) {
      async function* source(): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(CHUNK * 2);
        await Promise.resolve();
        throw thrown;
      }
      await expect(collect(encryptStream(source(), [alice.recipient]))).rejects.toBe(thrown);
      const cipher = await encryptBytes(new Uint8Array(CHUNK * 3), [alice.recipient]);
      async function* cipherThenFail(): AsyncGenerator<Uint8Array> {
        yield cipher.subarray(0, CHUNK);
        await Promise.resolve();
        throw thrown;
      }
      await expect(collect(decryptStream(cipherThenFail(), [alice.identity]))).rejects.toBe(thrown);
    }
  });

  it('stops with ABORTED when the signal fires, and closes the source', async () => {
    const { state, source } = trackedSource(1000);
    const controller = new AbortController();
    let chunks = 0;
    const err = await letheError(async () => {
      for await (const _ of encryptStream(source, [alice.recipient], {
        signal: controller.signal,
      })) {
        if (++chunks === 2) controller.abort();
      }
    }, ErrorCode.ABORTED);
    expect(err.message).toMatch(/cancelled/);
    expect(chunks).toBe(2);
    expect(state.closed).toBe(true);
  });

  it('stops with ABORTED even while the source is stalled', async () => {
    const stalled: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise<IteratorResult<Uint8Array>>(() => undefined),
      }),
    };
    const signal = AbortSignal.timeout(50);
    await letheError(
      () => collect(decryptStream(stalled, [alice.identity], { signal })),
      ErrorCode.ABORTED,
    );
  });

  it('validates keys when called, before reading anything', () => {
    const { state, source } = trackedSource(10);
    expect(() => encryptStream(source, [])).toThrow(LetheError);
    expect(() => decryptStream(source, ['AGE-SECRET-KEY-1NOPE'])).toThrow(/malformed age identity/);
    expect(state.yielded).toBe(0);
  });
});

describe('streaming without holding on to the source', () => {
  /** Yields `bytes` in pieces of `size` through one buffer that it overwrites after each yield. */
  async function* reusing(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
    const buffer = new Uint8Array(size);
    for (let at = 0; at < bytes.length; at += size) {
      const piece = bytes.subarray(at, at + size);
      buffer.set(piece);
      yield buffer.subarray(0, piece.length);
      buffer.fill(0xee);
      await Promise.resolve();
    }
  }

  it.each([1, 100, 65_536, 65_552, 100_000])(
    'is correct when the source reuses its %i-byte buffer',
    async (size) => {
      const plain = new Uint8Array(3 * CHUNK + 77).map((_, i) => i * 13);
      const cipher = await collect(encryptStream(reusing(plain, size), [alice.recipient]));
      expectSameBytes(await decryptBytes(cipher, [alice.identity]), plain);
      const back = await collect(decryptStream(reusing(cipher, size), [alice.identity]));
      expectSameBytes(back, plain);
    },
  );

  it('refuses a source that is not age after its first chunk, and closes it', async () => {
    const { state, source } = trackedSource(1000);
    const err = await letheError(
      () => collect(decryptStream(source, [alice.identity])),
      ErrorCode.CRYPTO,
    );
    expect(err.message).toMatch(/not a well-formed age v1 file/);
    expect(state.yielded).toBe(1);
    expect(state.closed).toBe(true);
  });

  it('refuses an endless header after about 1 MiB, and closes the source', async () => {
    let read = 0;
    let closed = false;
    async function* endless(): AsyncGenerator<Uint8Array> {
      try {
        yield new TextEncoder().encode('age-encryption.org/v1\n-> ');
        for (;;) {
          read++;
          yield new Uint8Array(CHUNK).fill(0x61);
          await Promise.resolve();
        }
      } finally {
        closed = true;
      }
    }
    const err = await letheError(
      () => collect(decryptStream(endless(), [alice.identity])),
      ErrorCode.CRYPTO,
    );
    expect(err.message).toMatch(/header is longer than/);
    expect(read).toBe(16);
    expect(closed).toBe(true);
  });

  it('throws CRYPTO for a stream that ends inside its header or nonce', async () => {
    const cipher = await encryptBytes(new Uint8Array(5), [alice.recipient]);
    const headerEnd =
      Buffer.from(cipher).indexOf('\n', Buffer.from(cipher).indexOf('\n---') + 1) + 1;
    for (const cut of [0, 10, headerEnd - 1, headerEnd, headerEnd + 15, headerEnd + 16]) {
      const truncated = cipher.subarray(0, cut);
      const err = await letheError(
        () => collect(decryptStream(chunked(truncated, [7]), [alice.identity])),
        ErrorCode.CRYPTO,
      );
      // Inside the nonce is a malformed file, as age classes it; after it, a cut payload.
      const problem = cut < headerEnd + 16 ? AgeProblem.MALFORMED : AgeProblem.PAYLOAD;
      expect(ageProblemOf(err), `cut at ${cut}`).toBe(problem);
      const whole = await letheError(
        () => decryptBytes(truncated, [alice.identity]),
        ErrorCode.CRYPTO,
      );
      expect(whole.details).toEqual(err.details);
    }
  });
});
