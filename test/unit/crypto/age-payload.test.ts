import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  openPayload,
  PayloadOpener,
  PayloadSealer,
  payloadKey,
  sealedLength,
  sealPayload,
} from '../../../src/crypto/age-payload.ts';
import {
  CHUNK,
  chunksOf,
  openChunk,
  SEALED_CHUNK,
  sealChunks,
  type ChunkSpec,
} from './age-oracle.ts';
import { chunkSizes, expectSameBytes, plaintexts } from './support.ts';

const SIZES = [0, 1, 65535, 65536, 65537, 131072, 1024 * 1024 + 7];
const payloadFailure = /its payload is truncated or was modified/;

const full = (): Buffer => randomBytes(CHUNK);

function keys(): { fileKey: Buffer; nonce: Buffer; key: Buffer } {
  const fileKey = randomBytes(16);
  const nonce = randomBytes(16);
  return { fileKey, nonce, key: payloadKey(fileKey, nonce) };
}

function seal(key: Uint8Array, plain: Uint8Array): Uint8Array {
  const out = new Uint8Array(sealedLength(plain.length));
  sealPayload(key, plain, out, 0);
  return out;
}

/** Splits `bytes` into pieces of the given sizes, cycled. */
function pieces(bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length] ?? bytes.length;
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

function streamSeal(key: Uint8Array, parts: readonly Uint8Array[]): Buffer {
  const sealer = new PayloadSealer(key);
  const out: Uint8Array[] = [];
  for (const part of parts) out.push(...sealer.push(part));
  out.push(sealer.finish());
  return Buffer.concat(out);
}

function streamOpen(key: Uint8Array, parts: readonly Uint8Array[]): Buffer {
  const opener = new PayloadOpener(key);
  const out: Uint8Array[] = [];
  for (const part of parts) out.push(...opener.push(part));
  out.push(opener.finish());
  return Buffer.concat(out);
}

describe('sealPayload', () => {
  it.each(SIZES)('writes exactly the spec STREAM for %i bytes', (size) => {
    const { fileKey, nonce, key } = keys();
    const plain = randomBytes(size);
    const sealed = seal(key, plain);
    const chunks = Math.max(1, Math.ceil(size / CHUNK));
    expect(sealed.length).toBe(size + 16 * chunks);
    // Byte-equal to the independent writer: same key schedule, nonces, chunking and flags.
    expectSameBytes(sealed, sealChunks(fileKey, nonce, chunksOf(plain)));
    // And each chunk opens with its own counter, flagged last only at the end.
    const last = (chunks - 1) * SEALED_CHUNK;
    const final = openChunk(fileKey, nonce, sealed.subarray(last), chunks - 1, true);
    expect(final?.length).toBe(size - (chunks - 1) * CHUNK);
    if (chunks > 1) {
      expect(openChunk(fileKey, nonce, sealed.subarray(0, SEALED_CHUNK), 0, false)).not.toBeNull();
      expect(openChunk(fileKey, nonce, sealed.subarray(0, SEALED_CHUNK), 0, true)).toBeNull();
    }
  });

  it('ends a multiple of 64 KiB with a full final chunk, not an extra empty one', () => {
    const { fileKey, nonce, key } = keys();
    const sealed = seal(key, randomBytes(2 * CHUNK));
    expect(sealed.length).toBe(2 * SEALED_CHUNK);
    expect(openChunk(fileKey, nonce, sealed.subarray(SEALED_CHUNK), 1, true)?.length).toBe(CHUNK);
  });
});

describe('openPayload', () => {
  it.each(SIZES)('opens the spec STREAM of %i bytes', (size) => {
    const { fileKey, nonce, key } = keys();
    const plain = randomBytes(size);
    const sealed = sealChunks(fileKey, nonce, chunksOf(plain));
    expectSameBytes(openPayload(key, sealed), plain);
    expectSameBytes(streamOpen(key, pieces(sealed, [7, 65_552, 1000])), plain);
  });

  const rejected: [string, () => ChunkSpec[], Uint8Array?][] = [
    ['no chunk at all', () => []],
    [
      'an empty final chunk after a full one',
      () => [
        { plain: full(), last: false },
        { plain: new Uint8Array(), last: true },
      ],
    ],
    ['no final chunk', () => [{ plain: full(), last: false }]],
    [
      'no final chunk, two chunks',
      () => [
        { plain: full(), last: false },
        { plain: full(), last: false },
      ],
    ],
    ['only a short middle chunk', () => [{ plain: randomBytes(10), last: false }]],
    [
      'a final flag before the end',
      () => [
        { plain: full(), last: true },
        { plain: randomBytes(5), last: true },
      ],
    ],
    [
      'two full final chunks',
      () => [
        { plain: full(), last: true },
        { plain: full(), last: true },
      ],
    ],
    [
      'swapped chunks',
      () => [
        { plain: full(), last: false, counter: 1 },
        { plain: full(), last: false, counter: 0 },
        { plain: randomBytes(3), last: true },
      ],
    ],
    [
      'a skipped counter',
      () => [
        { plain: full(), last: false },
        { plain: randomBytes(3), last: true, counter: 2 },
      ],
    ],
    ['one trailing byte', () => [{ plain: randomBytes(100), last: true }], new Uint8Array([0])],
    ['a trailing tag-sized block', () => [{ plain: full(), last: true }], new Uint8Array(16)],
    [
      'a final chunk shorter than a tag',
      () => [{ plain: full(), last: false }],
      new Uint8Array(15),
    ],
  ];
  it.each(rejected)('rejects a payload with %s, whole or streamed', (_, chunks, trailer) => {
    const { fileKey, nonce, key } = keys();
    const sealed = Buffer.concat([
      sealChunks(fileKey, nonce, chunks()),
      trailer ?? new Uint8Array(),
    ]);
    const reason = (open: () => unknown): string => {
      try {
        open();
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error('the payload opened');
    };
    const whole = reason(() => openPayload(key, sealed));
    expect(whole).toMatch(payloadFailure);
    expect(reason(() => streamOpen(key, pieces(sealed, [1000, 65_553])))).toBe(whole);
  });

  it('accepts one empty final chunk as the empty plaintext', () => {
    const { fileKey, nonce, key } = keys();
    const sealed = sealChunks(fileKey, nonce, [{ plain: new Uint8Array(), last: true }]);
    expect(openPayload(key, sealed)).toHaveLength(0);
    expect(streamOpen(key, [sealed])).toHaveLength(0);
  });

  it('returns plaintext in memory of its own', () => {
    const { key } = keys();
    const plain = openPayload(key, seal(key, randomBytes(100)));
    expect(plain.byteOffset).toBe(0);
    expect(plain.buffer.byteLength).toBe(100);
  });
});

describe('PayloadSealer / PayloadOpener', () => {
  it('stream exactly the bytes of the whole-buffer functions under any chunking', () => {
    fc.assert(
      fc.property(plaintexts, chunkSizes, chunkSizes, (plain, inSizes, outSizes) => {
        const { key } = keys();
        const whole = seal(key, plain);
        const streamed = streamSeal(key, pieces(plain, inSizes));
        expectSameBytes(streamed, whole);
        expectSameBytes(streamOpen(key, pieces(whole, outSizes)), plain);
      }),
      { numRuns: 60 },
    );
  });

  it('seal a full chunk only once more input shows it is not the last', () => {
    const { key } = keys();
    const sealer = new PayloadSealer(key);
    expect([...sealer.push(randomBytes(CHUNK))]).toHaveLength(0);
    const sealedChunks = [...sealer.push(randomBytes(1))];
    expect(sealedChunks.map((c) => c.length)).toEqual([SEALED_CHUNK]);
    expect(Buffer.concat([...sealedChunks, sealer.finish()])).toHaveLength(SEALED_CHUNK + 17);
  });

  it('open each chunk as soon as it is complete, as the age reference releases it', () => {
    const { key } = keys();
    const sealed = seal(key, randomBytes(CHUNK + 1));
    const opener = new PayloadOpener(key);
    const opened = [...opener.push(sealed.subarray(0, SEALED_CHUNK))];
    expect(opened.map((c) => c.length)).toEqual([CHUNK]);
    expect([...opener.push(sealed.subarray(SEALED_CHUNK, SEALED_CHUNK + 1))]).toHaveLength(0);
    expect([...opener.push(sealed.subarray(SEALED_CHUNK + 1))]).toHaveLength(0);
    expect(opener.finish()).toHaveLength(1);
  });

  it('release the middle chunks of a payload cut at a chunk boundary, then refuse it', () => {
    const { fileKey, nonce, key } = keys();
    const middle = [full(), full()];
    const sealed = sealChunks(
      fileKey,
      nonce,
      middle.map((plain) => ({ plain, last: false })),
    );
    const opener = new PayloadOpener(key);
    expectSameBytes(Buffer.concat([...opener.push(sealed)]), Buffer.concat(middle));
    const cut = /it ends after chunk 2 without a final chunk/;
    expect(() => opener.finish()).toThrow(cut);
    expect(() => openPayload(key, sealed)).toThrow(cut);
  });

  it('release a full final chunk, then refuse the first byte after it', () => {
    const { fileKey, nonce, key } = keys();
    const plain = full();
    const sealed = sealChunks(fileKey, nonce, [{ plain, last: true }]);
    const opener = new PayloadOpener(key);
    expectSameBytes(Buffer.concat([...opener.push(sealed)]), plain);
    const after = /data follows its final chunk, chunk 1/;
    expect(() => [...opener.push(new Uint8Array(1))]).toThrow(after);
    const extended = Buffer.concat([sealed, new Uint8Array(1)]);
    expect(() => openPayload(key, extended)).toThrow(after);
  });

  it('yield nothing from a chunk that fails authentication', () => {
    const { key } = keys();
    const sealed = Buffer.from(seal(key, randomBytes(3 * CHUNK)));
    sealed.writeUInt8(sealed.readUInt8(SEALED_CHUNK + 5) ^ 1, SEALED_CHUNK + 5); // second chunk
    const opener = new PayloadOpener(key);
    const got: Uint8Array[] = [];
    expect(() => {
      for (const chunk of opener.push(sealed)) got.push(chunk);
    }).toThrow(/chunk 2 failed authentication/);
    expect(got.map((c) => c.length)).toEqual([CHUNK]);
  });
});
