// Throughput of age X25519 wrapping: the age library's pure-JS X25519 against lethe's
// node:crypto one, plus whole small-file and AND-wrap operations.
// Run: npx tsx bench/x25519.ts
import { Encrypter } from 'age-encryption';
import {
  andUnwrap,
  andWrap,
  decryptBytes,
  encryptBytes,
  FastX25519Recipient,
  generateKeyPair,
} from '../src/crypto/index.ts';

const SECONDS = 2;
const RECIPIENTS_PER_FILE = 50;

/** Runs `op` repeatedly for about SECONDS and returns operations per second. */
async function rate(op: () => Promise<unknown>, opsPerCall = 1): Promise<number> {
  for (let i = 0; i < 20; i++) await op(); // warm up
  let calls = 0;
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    await op();
    calls++;
  }
  return (calls * opsPerCall) / ((performance.now() - start) / 1000);
}

const keys = Array.from({ length: RECIPIENTS_PER_FILE }, generateKeyPair);
const recipients = keys.map((k) => k.recipient);

// Wraps are measured as empty files with many recipients, so the per-file work is noise.
function wrapsWith(makeRecipient: (r: string) => string | FastX25519Recipient) {
  const encrypter = new Encrypter();
  for (const r of recipients) encrypter.addRecipient(makeRecipient(r));
  return () => encrypter.encrypt(new Uint8Array());
}

const small = new Uint8Array(1024).fill(7);
const [first] = keys;
if (!first) throw new Error('no keys');
const smallCipher = await encryptBytes(small, [first.recipient]);
const layers = keys.slice(0, 3);
const cell = generateKeyPair();
const wrapped = await andWrap(
  cell.identity,
  layers.map((k) => k.recipient),
);
const unwrapIdentities = layers.map((k) => k.identity).reverse();

const results: [string, number][] = [
  [
    'library X25519Recipient wraps/s',
    await rate(
      wrapsWith((r) => r),
      RECIPIENTS_PER_FILE,
    ),
  ],
  [
    'FastX25519Recipient wraps/s',
    await rate(
      wrapsWith((r) => new FastX25519Recipient(r)),
      RECIPIENTS_PER_FILE,
    ),
  ],
  ['encryptBytes 1 KiB files/s', await rate(() => encryptBytes(small, [first.recipient]))],
  ['decryptBytes 1 KiB files/s', await rate(() => decryptBytes(smallCipher, [first.identity]))],
  [
    'andWrap 3 layers/s',
    await rate(() =>
      andWrap(
        cell.identity,
        layers.map((k) => k.recipient),
      ),
    ),
  ],
  ['andUnwrap 3 layers/s', await rate(() => andUnwrap(wrapped, unwrapIdentities))],
];
for (const [name, value] of results) console.log(`${name.padEnd(34)} ${Math.round(value)}`);
