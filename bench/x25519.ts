// Throughput of lethe's age: the age library's payload path (pure-JS HKDF, HMAC and
// ChaCha20-Poly1305 over Web Streams, which lethe used before, here with lethe's fast X25519)
// against lethe's native age v1 on node:crypto. Also the library's own pure-JS X25519 wraps.
//
// Rates are per second of wall time and per second of this process's CPU time: on a shared
// machine the second is the steadier number.
// Run: node dist/bench/x25519.js [seconds per row and side, default 2] (npm ci or npm run build
// compiles it)
import { loadavg } from 'node:os';
import { Decrypter, Encrypter } from 'age-encryption';
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  FastX25519Identity,
  FastX25519Recipient,
  generateKeyPair,
} from '../src/crypto/index.ts';

const SECONDS = Number(process.argv[2] ?? 2);
const RECIPIENTS_PER_FILE = 50;
const MiB = 1024 * 1024;

interface Rate {
  readonly wall: number;
  readonly cpu: number;
}

const ROUNDS = 3;

/** Runs `op` repeatedly for about `seconds`; returns `perCall` units per wall and CPU second. */
async function rate(op: () => Promise<unknown>, perCall: number, seconds: number): Promise<Rate> {
  let calls = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    await op();
    calls++;
  }
  const wall = (performance.now() - start) / 1000;
  const cpuUsed = process.cpuUsage(cpuStart);
  const cpu = (cpuUsed.user + cpuUsed.system) / 1e6;
  return { wall: (calls * perCall) / wall, cpu: (calls * perCall) / cpu };
}

/**
 * Measures the library and the native operation in alternating rounds (SECONDS in all, each)
 * and keeps each one's best round, so a burst of load elsewhere skews neither side.
 */
async function compare(
  library: () => Promise<unknown>,
  native: () => Promise<unknown>,
  perCall = 1,
): Promise<[Rate, Rate]> {
  for (const op of [library, native]) await rate(op, perCall, Math.min(0.5, SECONDS / 4)); // warm up
  const best = (a: Rate | undefined, b: Rate): Rate =>
    a === undefined ? b : { wall: Math.max(a.wall, b.wall), cpu: Math.max(a.cpu, b.cpu) };
  let bestLibrary: Rate | undefined;
  let bestNative: Rate | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    bestLibrary = best(bestLibrary, await rate(library, perCall, SECONDS / ROUNDS));
    bestNative = best(bestNative, await rate(native, perCall, SECONDS / ROUNDS));
  }
  if (bestLibrary === undefined || bestNative === undefined) throw new Error('no rounds');
  return [bestLibrary, bestNative];
}

const keys = Array.from({ length: RECIPIENTS_PER_FILE }, generateKeyPair);
const [first] = keys;
if (!first) throw new Error('no keys');
const recipients = keys.map((k) => k.recipient);

// The library configured as lethe used it before: fast X25519 stanzas, library payload.
function libraryEncrypter(...to: string[]): Encrypter {
  const encrypter = new Encrypter();
  for (const r of to) encrypter.addRecipient(new FastX25519Recipient(r));
  return encrypter;
}
function libraryDecrypter(...identities: string[]): Decrypter {
  const decrypter = new Decrypter();
  for (const i of identities) decrypter.addIdentity(new FastX25519Identity(i));
  return decrypter;
}
/** 64 KiB pieces of `bytes`, as a Node stream would deliver them. */
async function* pieces(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += 65_536) {
    yield bytes.subarray(at, at + 65_536);
    await Promise.resolve(); // as a real source would, between reads
  }
}
function webStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  const source = pieces(bytes);
  return new ReadableStream({
    async pull(controller) {
      const next = await source.next();
      if (next.done === true) controller.close();
      else controller.enqueue(next.value);
    },
  });
}
async function drain(source: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const chunk of source) bytes += chunk.length;
  return bytes;
}
async function drainWeb(stream: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stream.getReader();
  let bytes = 0;
  for (let next = await reader.read(); !next.done; next = await reader.read()) {
    bytes += next.value.length;
  }
  return bytes;
}

const small = new Uint8Array(1024).fill(7);
const big = new Uint8Array(16 * MiB).map((_, i) => i);
const smallCipher = await encryptBytes(small, [first.recipient]);
const bigCipher = await encryptBytes(big, [first.recipient]);

const wrapsWith = (makeRecipient: (r: string) => string | FastX25519Recipient) => {
  const encrypter = new Encrypter();
  for (const r of recipients) encrypter.addRecipient(makeRecipient(r));
  return () => encrypter.encrypt(new Uint8Array());
};

type Row = [name: string, unit: string, rates: [library: Rate, native: Rate]];
const loadBefore = loadavg()[0] ?? 0;
const MB = big.length / 1e6;
const rows: Row[] = [
  [
    'X25519 wraps (library curve / Fast)',
    'wraps/s',
    await compare(
      wrapsWith((r) => r),
      wrapsWith((r) => new FastX25519Recipient(r)),
      RECIPIENTS_PER_FILE,
    ),
  ],
  [
    'encryptBytes 1 KiB',
    'files/s',
    await compare(
      () => libraryEncrypter(first.recipient).encrypt(small),
      () => encryptBytes(small, [first.recipient]),
    ),
  ],
  [
    'decryptBytes 1 KiB',
    'files/s',
    await compare(
      () => libraryDecrypter(first.identity).decrypt(smallCipher),
      () => decryptBytes(smallCipher, [first.identity]),
    ),
  ],
  [
    'encryptBytes 16 MiB',
    'MB/s',
    await compare(
      () => libraryEncrypter(first.recipient).encrypt(big),
      () => encryptBytes(big, [first.recipient]),
      MB,
    ),
  ],
  [
    'decryptBytes 16 MiB',
    'MB/s',
    await compare(
      () => libraryDecrypter(first.identity).decrypt(bigCipher),
      () => decryptBytes(bigCipher, [first.identity]),
      MB,
    ),
  ],
  [
    'encryptStream 16 MiB',
    'MB/s',
    await compare(
      async () => drainWeb(await libraryEncrypter(first.recipient).encrypt(webStream(big))),
      () => drain(encryptStream(pieces(big), [first.recipient])),
      MB,
    ),
  ],
  [
    'decryptStream 16 MiB',
    'MB/s',
    await compare(
      async () => drainWeb(await libraryDecrypter(first.identity).decrypt(webStream(bigCipher))),
      () => drain(decryptStream(pieces(bigCipher), [first.identity])),
      MB,
    ),
  ],
];

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US').padStart(9);
console.log(
  `${''.padEnd(48)}${'age library'.padStart(19)}${'native'.padStart(20)}${'speed-up'.padStart(10)}`,
);
console.log(`${''.padEnd(48)}${'wall      cpu'.padStart(19)}${'wall      cpu'.padStart(20)}`);
for (const [name, unit, [library, native]] of rows) {
  const speedUp = `${(native.cpu / library.cpu).toFixed(1)}x`;
  console.log(
    `${`${name} (${unit})`.padEnd(48)} ${fmt(library.wall)}${fmt(library.cpu)}  ${fmt(native.wall)}${fmt(native.cpu)}${speedUp.padStart(9)}`,
  );
}
console.log(
  `\nBest of ${ROUNDS} alternating rounds. wall: per second of wall time; cpu: per second of` +
    ` this process's CPU time; speed-up by cpu.` +
    `\nload average (1 min) before ${loadBefore.toFixed(2)}, after ${(loadavg()[0] ?? 0).toFixed(2)}.`,
);
