// The native age v1 encoder and decoder against the age library (the reference TypeScript
// implementation, used here only as an oracle), and under systematic tampering.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Decrypter, Encrypter } from 'age-encryption';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  FastX25519Identity,
  FastX25519Recipient,
  generateKeyPair,
} from '../../../src/crypto/index.ts';
import { decryptWith, encryptTo } from '../../../src/crypto/age.ts';
import { CHUNK, headerLength, SEALED_CHUNK, stanzaText } from './age-oracle.ts';
import {
  allMessages,
  chunked,
  chunkSizes,
  collect,
  expectSameBytes,
  letheError,
  plaintexts,
} from './support.ts';

const SIZES = [0, 1, 65535, 65536, 65537, 131072, 1024 * 1024 + 7];

const alice = generateKeyPair();
const eve = generateKeyPair();

function libraryDecrypter(identity: string): Decrypter {
  const decrypter = new Decrypter();
  decrypter.addIdentity(identity);
  return decrypter;
}

describe('native encoder and decoder against the age library', () => {
  it.each(SIZES)(
    'the library decrypts encryptBytes and encryptStream output of %i bytes',
    async (size) => {
      const plain = randomBytes(size);
      const decrypter = libraryDecrypter(alice.identity);
      const cipher = await encryptBytes(plain, [alice.recipient]);
      expectSameBytes(await decrypter.decrypt(cipher), plain);
      const streamed = await collect(
        encryptStream(chunked(plain, [1, 4095, 70_000]), [alice.recipient]),
      );
      expectSameBytes(await decrypter.decrypt(streamed), plain);
    },
  );

  it.each(SIZES)('decryptBytes and decryptStream open library output of %i bytes', async (size) => {
    const plain = randomBytes(size);
    const encrypter = new Encrypter();
    encrypter.addRecipient(alice.recipient); // the library's own (noble) X25519
    const cipher = await encrypter.encrypt(plain);
    expectSameBytes(await decryptBytes(cipher, [alice.identity]), plain);
    expectSameBytes(
      await collect(decryptStream(chunked(cipher, [333, 65_552]), [alice.identity])),
      plain,
    );
  });

  it.each(SIZES)('frames %i bytes exactly as long as the library does', async (size) => {
    const plain = randomBytes(size);
    const encrypter = new Encrypter();
    encrypter.addRecipient(alice.recipient);
    const theirs = await encrypter.encrypt(plain);
    const ours = await encryptBytes(plain, [alice.recipient]);
    expect(ours.length).toBe(theirs.length);
    expect(headerLength(ours)).toBe(headerLength(theirs));
    const chunks = Math.max(1, Math.ceil(size / CHUNK));
    expect(ours.length - headerLength(ours)).toBe(16 + size + 16 * chunks);
  });

  it.each([0, 1, 31, 47, 48, 49, 95, 96, 97, 200])(
    'writes a file with an extra %i-byte stanza body that the library and lethe open',
    async (bodyBytes) => {
      const plain = randomBytes(1000);
      const body = new Uint8Array(randomBytes(bodyBytes));
      const other = { wrapFileKey: () => [{ args: ['grease-1', 'a=b'], body }] };
      const cipher = encryptTo(plain, [other, new FastX25519Recipient(alice.recipient)]);
      // Lines of 64 columns, the last shorter (empty after a multiple of 48 bytes).
      const expected = `age-encryption.org/v1\n${stanzaText(['grease-1', 'a=b'], body)}-> X25519 `;
      expect(Buffer.from(cipher).toString('latin1').startsWith(expected)).toBe(true);
      expectSameBytes(await libraryDecrypter(alice.identity).decrypt(cipher), plain);
      expectSameBytes(decryptWith(cipher, [new FastX25519Identity(alice.identity)]), plain);
    },
  );

  it('streams output of the same length as the bytes function, that both sides decrypt', async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, chunkSizes, chunkSizes, async (plain, inSizes, outSizes) => {
        const streamed = await collect(encryptStream(chunked(plain, inSizes), [alice.recipient]));
        const whole = await encryptBytes(plain, [alice.recipient]);
        expect(streamed.length).toBe(whole.length);
        expectSameBytes(await decryptBytes(streamed, [alice.identity]), plain);
        expectSameBytes(await libraryDecrypter(alice.identity).decrypt(streamed), plain);
        const back = await collect(decryptStream(chunked(streamed, outSizes), [alice.identity]));
        expectSameBytes(back, plain);
      }),
      { numRuns: 25 },
    );
  });

  it('hands out output in memory of its own, never a slice of a shared pool', async () => {
    const cipher = await encryptBytes(randomBytes(10), [alice.recipient]);
    const plain = await decryptBytes(cipher, [alice.identity]);
    const chunks = [
      cipher,
      plain,
      ...(await chunksOf(encryptStream(chunked(randomBytes(70_000)), [alice.recipient]))),
      ...(await chunksOf(decryptStream(chunked(cipher), [alice.identity]))),
    ];
    for (const chunk of chunks) expect(chunk.buffer.byteLength).toBe(chunk.length);
  });
});

async function chunksOf(source: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const chunk of source) out.push(chunk);
  return out;
}

/** Asserts that both decryptBytes and decryptStream refuse `bad` with CRYPTO, leaking nothing. */
async function refused(bad: Uint8Array, sizes: readonly number[] = [4096]): Promise<void> {
  const byBytes = await letheError(() => decryptBytes(bad, [alice.identity]), ErrorCode.CRYPTO);
  const byStream = await letheError(
    () => collect(decryptStream(chunked(bad, sizes), [alice.identity])),
    ErrorCode.CRYPTO,
  );
  for (const err of [byBytes, byStream]) {
    expect(allMessages(err)).not.toContain(alice.identity.slice(16));
  }
}

describe('native decoder under tampering', () => {
  // Three chunks: two full, one short.
  const plain = randomBytes(2 * CHUNK + 100);
  const cipherPromise = encryptBytes(plain, [alice.recipient]);
  const flip = (bytes: Uint8Array, at: number, mask = 1): Uint8Array => {
    const copy = Uint8Array.from(bytes);
    copy[at] = (copy[at] ?? 0) ^ mask;
    return copy;
  };

  it('refuses a flip of any bit pattern in any byte of the header and nonce', async () => {
    const cipher = await cipherPromise;
    const end = headerLength(cipher) + 16;
    for (let at = 0; at < end; at++) {
      for (const mask of [0x01, 0x80]) await refused(flip(cipher, at, mask));
    }
  });

  it('refuses a flip at the edges of every payload chunk (counters, tags)', async () => {
    const cipher = await cipherPromise;
    const payload = headerLength(cipher) + 16;
    for (let chunk = 0; chunk < 3; chunk++) {
      const start = payload + chunk * SEALED_CHUNK;
      const end = Math.min(start + SEALED_CHUNK, cipher.length);
      const edges = [start, start + 1, start + 2, end - 17, end - 16, end - 2, end - 1];
      for (const at of edges) await refused(flip(cipher, at), [65_552]);
    }
  });

  it('refuses any byte flipped anywhere, with any mask', async () => {
    const cipher = await cipherPromise;
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: cipher.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        chunkSizes,
        async (at, mask, sizes) => refused(flip(cipher, at, mask), sizes),
      ),
      { numRuns: 120 },
    );
  });

  it('refuses truncation at, and around, every chunk boundary and anywhere in the header', async () => {
    const cipher = await cipherPromise;
    const payload = headerLength(cipher) + 16;
    const cuts = new Set<number>();
    for (let at = 0; at <= payload; at++) cuts.add(at);
    for (let chunk = 0; chunk <= 3; chunk++) {
      const boundary = payload + chunk * SEALED_CHUNK;
      for (const delta of [-17, -16, -1, 0, 1, 15, 16, 17]) cuts.add(boundary + delta);
    }
    cuts.add(cipher.length - 1);
    for (const cut of [...cuts].filter((c) => c >= 0 && c < cipher.length)) {
      await refused(cipher.subarray(0, cut));
    }
  });

  it('refuses data appended after the final chunk', async () => {
    const cipher = await cipherPromise;
    const payload = headerLength(cipher) + 16;
    const exact = await encryptBytes(randomBytes(2 * CHUNK), [alice.recipient]);
    const exactPayload = headerLength(exact) + 16;
    const appended: Uint8Array[] = [
      Buffer.concat([cipher, new Uint8Array([0])]),
      Buffer.concat([cipher, new Uint8Array(16)]),
      Buffer.concat([cipher, cipher.subarray(payload, payload + SEALED_CHUNK)]),
      Buffer.concat([cipher, cipher.subarray(payload + 2 * SEALED_CHUNK)]),
      Buffer.concat([cipher, await encryptBytes(new Uint8Array(), [alice.recipient])]),
      // After a full final chunk, even one byte makes that chunk a middle one.
      Buffer.concat([exact, new Uint8Array([0])]),
      Buffer.concat([exact, exact.subarray(exactPayload + SEALED_CHUNK)]),
    ];
    for (const bad of appended) await refused(bad, [65_552, 3]);
  });

  it('refuses a file for someone else, naming the likely cause', async () => {
    const err = await letheError(
      async () => decryptBytes(await cipherPromise, [eve.identity]),
      ErrorCode.CRYPTO,
    );
    expect(err.message).toMatch(/none of the identities given opens it/);
  });
});
