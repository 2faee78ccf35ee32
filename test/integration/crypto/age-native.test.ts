// The native age v1 encoder and decoder against the real age CLI: byte-level interop at the
// chunk-size edges, header edge cases on which both must agree, and tampered payloads.
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decrypter } from 'age-encryption';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  FastX25519Recipient,
  generateKeyPair,
} from '../../../src/crypto/index.ts';
import { encryptTo } from '../../../src/crypto/age.ts';
import {
  b64,
  CHUNK,
  chunksOf,
  craftFile,
  headerLength,
  macOf,
  SEALED_CHUNK,
  stanzaText,
  x25519StanzaText,
  type ChunkSpec,
} from '../../unit/crypto/age-oracle.ts';
import { chunked, collect, expectSameBytes } from '../../unit/crypto/support.ts';
import { identityFile, privateTempDir, run } from './age-cli.ts';

const SIZES = [0, 1, 65535, 65536, 65537, 131072, 1024 * 1024 + 7];
const VERSION = 'age-encryption.org/v1\n';

const alice = generateKeyPair();
let dir: string;
let keyPath: string;
beforeAll(async () => {
  dir = await privateTempDir();
  keyPath = await identityFile(dir, 'alice.key', alice.identity);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ageDecrypt = (file: Uint8Array): Promise<Buffer> => run('age', ['-d', '-i', keyPath], file);

/** Whether the age CLI, decryptBytes and decryptStream each open `file` (to `plain`, if given). */
async function verdicts(file: Uint8Array, plain?: Uint8Array) {
  const check = async (open: () => Promise<Uint8Array>, lethe: boolean): Promise<boolean> => {
    try {
      const out = await open();
      if (plain !== undefined) expectSameBytes(out, plain);
      return true;
    } catch (err) {
      if (lethe && !isLetheError(err, ErrorCode.CRYPTO)) throw err;
      return false;
    }
  };
  return {
    cli: await check(() => ageDecrypt(file), false),
    bytes: await check(() => decryptBytes(file, [alice.identity]), true),
    stream: await check(() => collect(decryptStream(chunked(file, [977]), [alice.identity])), true),
  };
}
const allOpen = { cli: true, bytes: true, stream: true };
const noneOpen = { cli: false, bytes: false, stream: false };

describe('native encoder → age CLI and age library', () => {
  it.each(SIZES)('both open encryptBytes output of %i bytes', async (size) => {
    const plain = randomBytes(size);
    const cipher = await encryptBytes(plain, [alice.recipient]);
    expectSameBytes(await ageDecrypt(cipher), plain);
    const decrypter = new Decrypter();
    decrypter.addIdentity(alice.identity);
    expectSameBytes(await decrypter.decrypt(cipher), plain);
  });

  it.each(SIZES)('age -d opens encryptStream output of %i bytes', async (size) => {
    const plain = randomBytes(size);
    const cipher = await collect(
      encryptStream(chunked(plain, [65_536, 1, 65_535]), [alice.recipient]),
    );
    expectSameBytes(await ageDecrypt(cipher), plain);
  });

  it.each(SIZES)('frames %i bytes exactly as long as age -r does', async (size) => {
    const plain = randomBytes(size);
    const theirs = await run('age', ['-r', alice.recipient], plain);
    const ours = await encryptBytes(plain, [alice.recipient]);
    expect(ours.length).toBe(theirs.length);
    expect(headerLength(ours)).toBe(headerLength(theirs));
  });

  it.each([0, 1, 47, 48, 49, 96, 97])(
    'age -d opens a file with an extra %i-byte stanza body (64-column lines, empty last line)',
    async (bodyBytes) => {
      const plain = randomBytes(500);
      const other = {
        wrapFileKey: () => [{ args: ['grease', 'x'], body: randomBytes(bodyBytes) }],
      };
      const cipher = encryptTo(plain, [new FastX25519Recipient(alice.recipient), other]);
      expectSameBytes(await ageDecrypt(cipher), plain);
    },
  );
});

describe('age CLI → native decoder', () => {
  it.each(SIZES)('decryptBytes and decryptStream open age -r output of %i bytes', async (size) => {
    const plain = randomBytes(size);
    const cipher = await run(
      'age',
      ['-r', alice.recipient, '-r', generateKeyPair().recipient],
      plain,
    );
    expectSameBytes(await decryptBytes(cipher, [alice.identity]), plain);
    for (const sizes of [[1, 65_551], [65_552], [1_000_000]]) {
      expectSameBytes(
        await collect(decryptStream(chunked(cipher, sizes), [alice.identity])),
        plain,
      );
    }
  });
});

describe('header edge cases: lethe and the age CLI agree', () => {
  // Each file has a correct MAC for its (possibly malformed) header, so only the parsing rule
  // in question can reject it.
  const fileKey = randomBytes(16);
  const x = x25519StanzaText(alice.recipient, fileKey);
  const [xArgs = '', xBody = ''] = x.split('\n');
  const lastBit = (text: string): string =>
    text.slice(0, -1) + String.fromCharCode(text.charCodeAt(text.length - 1) + 1);
  const every = Array.from({ length: 94 }, (_, i) => String.fromCharCode(0x21 + i)).join('');

  const cases: [string, string, boolean][] = [
    ['the canonical header', `${VERSION}${x}`, true],
    ['an empty stanza body first', `${VERSION}-> grease\n\n${x}`, true],
    [
      'a 48-byte stanza body and its empty line',
      `${VERSION}${x}${stanzaText(['g'], randomBytes(48))}`,
      true,
    ],
    ['a 96-byte stanza body', `${VERSION}${stanzaText(['g', 'h'], randomBytes(96))}${x}`, true],
    [
      'every printable argument character',
      `${VERSION}-> ${every.slice(0, 47)} ${every.slice(47)}\n\n${x}`,
      true,
    ],
    ['another version', `age-encryption.org/v2\n${x}`, false],
    ['CRLF line ends', `${VERSION}${x}`.replaceAll('\n', '\r\n'), false],
    ['a body line over 64 columns', `${VERSION}-> g\n${b64(randomBytes(51))}\n${x}`, false],
    [
      'a full body line without the empty last line',
      `${VERSION}${x}-> g\n${b64(randomBytes(48))}\n`,
      false,
    ],
    ['a stanza with no body line', `${VERSION}${x}-> empty\n`, false],
    ['a stanza with no arguments', `${VERSION}->\n\n${x}`, false],
    ['a stanza with an empty argument', `${VERSION}-> a  b\n\n${x}`, false],
    ['no space after the arrow', `${VERSION}->grease\n\n${x}`, false],
    ['a non-ASCII argument', `${VERSION}-> gr\u00e9ase\n\n${x}`, false],
    ['a carriage return after the arguments', `${VERSION}-> grease\r\n\n${x}`, false],
    ['a tab in an argument', `${VERSION}-> gr\tease\n\n${x}`, false],
    ['a padded stanza body', `${VERSION}${xArgs}\n${xBody}=\n`, false],
    ['a stanza body with non-zero trailing bits', `${VERSION}${xArgs}\n${lastBit(xBody)}\n`, false],
    [
      'a URL-safe stanza body',
      `${VERSION}-> g\n${b64(Buffer.from([0xfb, 0xff, 0xbf]))}`.replace('+/+/', '-_-_') + `\n${x}`,
      false,
    ],
    ['an empty line between stanzas', `${VERSION}${x}\n-> g\n\n`, false],
    ['no stanza', VERSION, false],
  ];

  it.each(cases)('%s', async (_, header, ok) => {
    const plain = randomBytes(100);
    const { file } = craftFile(fileKey, `${header}---`, [{ plain, last: true }]);
    expect(await verdicts(file, plain)).toEqual(ok ? allOpen : noneOpen);
  });

  const h = `${VERSION}${x}---`;
  const mac = macOf(fileKey, h);
  it.each([
    ['a MAC line without the space', `${mac}\n`],
    ['a MAC line with a trailing space', ` ${mac} \n`],
    ['a truncated MAC', ` ${mac.slice(0, -1)}\n`],
    ['a MAC with non-zero trailing bits', ` ${lastBit(mac)}\n`],
    ['a MAC of another key', ` ${macOf(randomBytes(16), h)}\n`],
  ])('%s', async (_, macLine) => {
    const { file } = craftFile(fileKey, h, [{ plain: randomBytes(10), last: true }], macLine);
    expect(await verdicts(file)).toEqual(noneOpen);
  });
});

describe('payload edge cases: lethe and the age CLI agree', () => {
  const fileKey = randomBytes(16);
  const header = `${VERSION}${x25519StanzaText(alice.recipient, fileKey)}---`;
  const full = (): Buffer => randomBytes(CHUNK);
  const cases: [string, () => ChunkSpec[], boolean][] = [
    ['one empty chunk (the empty file)', () => [{ plain: new Uint8Array(), last: true }], true],
    ['a full final chunk', () => chunksOf(randomBytes(2 * CHUNK)), true],
    [
      'an empty final chunk after a full one',
      () => [
        { plain: full(), last: false },
        { plain: new Uint8Array(), last: true },
      ],
      false,
    ],
    [
      'no final chunk',
      () => [
        { plain: full(), last: false },
        { plain: full(), last: false },
      ],
      false,
    ],
    ['no chunk at all', () => [], false],
    [
      'a final flag before the end',
      () => [
        { plain: full(), last: true },
        { plain: full(), last: true },
      ],
      false,
    ],
    [
      'swapped chunks',
      () => [
        { plain: full(), last: false, counter: 1 },
        { plain: full(), last: false, counter: 0 },
        { plain: full(), last: true },
      ],
      false,
    ],
  ];
  it.each(cases)('%s', async (_, chunks, ok) => {
    const specs = chunks();
    const plain = Buffer.concat(specs.map((c) => c.plain));
    const { file } = craftFile(fileKey, header, specs);
    expect(await verdicts(file, plain)).toEqual(ok ? allOpen : noneOpen);
  });

  it('both refuse native files truncated at any chunk boundary or with data appended', async () => {
    const cipher = await encryptBytes(randomBytes(2 * CHUNK), [alice.recipient]);
    const payload = headerLength(cipher) + 16;
    const bad = [
      cipher.subarray(0, payload),
      cipher.subarray(0, payload + SEALED_CHUNK),
      cipher.subarray(0, cipher.length - 1),
      Buffer.concat([cipher, new Uint8Array(1)]),
      Buffer.concat([cipher, cipher.subarray(payload, payload + SEALED_CHUNK)]),
    ];
    for (const file of bad) expect(await verdicts(file)).toEqual(noneOpen);
  });
});
