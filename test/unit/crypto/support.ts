import { expect } from 'vitest';
import fc from 'fast-check';
import { LetheError, type ErrorCode } from '../../../src/errors/index.ts';

/** Concatenates an async iterable of bytes. */
export async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}

/** Yields `bytes` in pieces of the given sizes (cycled), including empty pieces. */
export async function* chunked(
  bytes: Uint8Array,
  sizes: readonly number[] = [bytes.length],
): AsyncGenerator<Uint8Array> {
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const size = sizes[i % sizes.length] ?? bytes.length;
    yield bytes.slice(offset, offset + size);
    offset += size;
    await Promise.resolve();
  }
}

/** Awaits `action` and returns the LetheError it throws, asserting its code. */
export async function letheError(action: () => unknown, code: ErrorCode): Promise<LetheError> {
  let thrown: unknown;
  try {
    await action();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(LetheError);
  const err = thrown as LetheError;
  expect(err.code).toBe(code);
  return err;
}

/** Every message in an error's cause chain, for "never contains the secret" checks. */
export function allMessages(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause)
    parts.push(e.message, String(e.stack));
  return parts.join('\n');
}

/** Arbitrary plaintexts around age's 64 KiB chunk boundaries as well as small ones. */
export const plaintexts = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc
    .tuple(fc.constantFrom(65536, 131072), fc.integer({ min: -2, max: 2 }))
    .map(([base, delta]) => new Uint8Array(base + delta).map((_, i) => i * 7)),
);

/** Chunk sizes for re-chunking streams, from single bytes up to over one age chunk. */
export const chunkSizes = fc
  .array(fc.oneof(fc.integer({ min: 0, max: 17 }), fc.integer({ min: 1, max: 70_000 })), {
    minLength: 1,
    maxLength: 8,
  })
  .filter((sizes) => sizes.some((s) => s > 0));

/** Byte equality; vitest's deep equality is far too slow on 100 KiB arrays. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected), 'bytes differ').toBe(0);
}
