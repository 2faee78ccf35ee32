import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Encrypter, Stanza as LibraryStanza } from 'age-encryption';
import {
  decodeBase64,
  encodeBase64,
  encodeHeaderWithoutMac,
  encodeMacLine,
  HeaderParser,
  MAX_HEADER_BYTES,
  parseHeader,
  type Stanza,
} from '../../../src/crypto/age-format.ts';
import { b64, stanzaText } from './age-oracle.ts';

const VERSION = 'age-encryption.org/v1\n';
const MAC = ` ${b64(new Uint8Array(32).fill(7))}\n`;

const argument = fc.string({
  unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 12,
});
/** Bodies around the 48-byte line boundaries as well as arbitrary ones. */
const body = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom(0, 1, 47, 48, 49, 95, 96, 97, 144).map((n) => new Uint8Array(randomBytes(n))),
);
const stanzas = fc.array(
  fc
    .tuple(fc.array(argument, { minLength: 1, maxLength: 4 }), body)
    .map(([args, bytes]): Stanza => ({ args, body: bytes })),
  { minLength: 1, maxLength: 4 },
);

/** The header the age library writes for these stanzas, up to and including `---`. */
async function libraryHeader(list: Stanza[]): Promise<string> {
  const encrypter = new Encrypter();
  encrypter.addRecipient({ wrapFileKey: () => list.map((s) => new LibraryStanza(s.args, s.body)) });
  const file = Buffer.from(await encrypter.encrypt(new Uint8Array())).toString('latin1');
  return file.slice(0, file.indexOf('\n---') + 4);
}

function sameStanzas(actual: readonly Stanza[], expected: readonly Stanza[]): void {
  expect(actual.map((s) => s.args)).toEqual(expected.map((s) => s.args));
  expect(actual.map((s) => b64(s.body))).toEqual(expected.map((s) => b64(s.body)));
}

const malformed = /not a well-formed age v1 file/;

describe('encodeHeaderWithoutMac', () => {
  it('writes byte for byte what the age library writes, for any stanzas', async () => {
    await fc.assert(
      fc.asyncProperty(stanzas, async (list) => {
        expect(encodeHeaderWithoutMac(list)).toBe(await libraryHeader(list));
      }),
      { numRuns: 150 },
    );
  });

  it('ends a body of a multiple of 48 bytes with an empty line', () => {
    const full = { args: ['grease', 'a'], body: new Uint8Array(48).fill(1) };
    const text = encodeHeaderWithoutMac([full]);
    expect(text).toBe(`${VERSION}-> grease a\n${'AQEB'.repeat(16)}\n\n---`);
    expect(encodeHeaderWithoutMac([{ args: ['e'], body: new Uint8Array() }])).toBe(
      `${VERSION}-> e\n\n---`,
    );
    const long = encodeHeaderWithoutMac([{ args: ['x'], body: new Uint8Array(49) }]);
    expect(long).toBe(`${VERSION}-> x\n${'A'.repeat(64)}\nAA\n---`);
  });

  it('refuses arguments that could not be parsed back', () => {
    for (const args of [[], [''], ['a b'], ['tab\t'], ['é']]) {
      expect(() => encodeHeaderWithoutMac([{ args, body: new Uint8Array(1) }])).toThrow(TypeError);
    }
  });
});

describe('parseHeader / HeaderParser', () => {
  it('parses back any encoded header, whole or pushed in arbitrary pieces', () => {
    fc.assert(
      fc.property(
        stanzas,
        fc.array(fc.nat({ max: 400 }), { maxLength: 12 }),
        fc.uint8Array({ maxLength: 40 }),
        (list, cuts, after) => {
          const header = Buffer.from(encodeHeaderWithoutMac(list) + MAC, 'latin1');
          const file = Buffer.concat([header, after]);
          const whole = parseHeader(file);
          sameStanzas(whole.header.stanzas, list);
          expect(Buffer.from(whole.header.macInput).toString('latin1')).toBe(
            encodeHeaderWithoutMac(list),
          );
          expect(b64(whole.header.mac)).toBe(MAC.trim());
          expect(Buffer.from(whole.rest).equals(after)).toBe(true);

          const parser = new HeaderParser();
          const points = [...new Set(cuts.map((c) => c % (file.length + 1)))].sort((a, b) => a - b);
          let result: ReturnType<HeaderParser['push']>;
          let from = 0;
          const rest: Uint8Array[] = [];
          for (const to of [...points, file.length]) {
            const piece = file.subarray(from, to);
            from = to;
            if (result === undefined) result = parser.push(piece);
            else rest.push(piece);
          }
          if (result === undefined) throw new Error('header never completed');
          sameStanzas(result.header.stanzas, list);
          expect(Buffer.from(result.header.macInput).equals(whole.header.macInput)).toBe(true);
          expect(Buffer.concat([result.rest, ...rest]).equals(after)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('keeps its own copy of pushed bytes', () => {
    const header = Buffer.from(`${VERSION}${stanzaText(['a'], new Uint8Array(5))}---${MAC}`);
    const first = Buffer.from(header.subarray(0, 30));
    const parser = new HeaderParser();
    expect(parser.push(first)).toBeUndefined();
    first.fill(0x41); // a source reusing its buffer
    const parsed = parser.push(header.subarray(30));
    expect(Buffer.from(parsed?.header.macInput ?? []).toString()).toBe(
      header.toString().slice(0, -MAC.length),
    );
  });

  // Every case is a complete header with a MAC line, so only the rule named can reject it.
  const x = stanzaText(['X25519', b64(randomBytes(32))], randomBytes(32));
  it.each([
    ['another version', `age-encryption.org/v2\n${x}---${MAC}`],
    ['CRLF line ends', `${VERSION}${x}---${MAC}`.replaceAll('\n', '\r\n')],
    ['a carriage return in a body line', `${VERSION}-> a\nAAAA\r\n---${MAC}`],
    ['a non-ASCII byte in an argument', `${VERSION}-> gr\u00e9ase\n\n${x}---${MAC}`],
    ['a carriage return after the arguments', `${VERSION}-> grease\r\n\n${x}---${MAC}`],
    ['a tab in an argument', `${VERSION}-> gr\tease\n\n${x}---${MAC}`],
    ['a body line over 64 columns', `${VERSION}-> a\n${'A'.repeat(68)}\n---${MAC}`],
    [
      'a full body line not followed by a short one',
      `${VERSION}-> a\n${'A'.repeat(64)}\n---${MAC}`,
    ],
    ['a stanza with no body line', `${VERSION}-> empty\n---${MAC}`],
    ['a body line after the short last one', `${VERSION}-> a\nAAAA\nAAAA\n---${MAC}`],
    ['an empty line between stanzas', `${VERSION}${x}\n${x}---${MAC}`],
    ['a stanza with no arguments', `${VERSION}->\n\n---${MAC}`],
    ['a stanza with an empty argument', `${VERSION}-> a  b\n\n---${MAC}`],
    ['a trailing space after the arguments', `${VERSION}-> a \n\n---${MAC}`],
    ['no space after the arrow', `${VERSION}->X25519 abc\n\n---${MAC}`],
    ['a padded body line', `${VERSION}-> a\nAAA=\n---${MAC}`],
    ['a body line with non-zero trailing bits', `${VERSION}-> a\nAB\n---${MAC}`],
    ['a body line in the URL-safe alphabet', `${VERSION}-> a\nA-_A\n---${MAC}`],
    ['a body line of 1 mod 4 characters', `${VERSION}-> a\nAAAAA\n---${MAC}`],
    ['no stanza at all', `${VERSION}---${MAC}`],
    ['a MAC line without the space', `${VERSION}${x}---${MAC.slice(1)}`],
    ['a MAC line with a trailing space', `${VERSION}${x}---${MAC.slice(0, -1)} \n`],
    ['a truncated MAC', `${VERSION}${x}--- ${b64(new Uint8Array(31))}\n`],
    ['a MAC with non-zero trailing bits', `${VERSION}${x}--- ${'A'.repeat(42)}B\n`],
    ['a line that is neither stanza nor MAC', `${VERSION}${x}hello\n---${MAC}`],
  ])('rejects a header with %s', (_, text) => {
    expect(() => parseHeader(Buffer.from(text, 'latin1'))).toThrow(malformed);
  });

  it.each([
    ['an empty body', `${VERSION}-> grease\n\n`],
    ['a 48-byte body and its empty last line', `${VERSION}${stanzaText(['g'], randomBytes(48))}`],
    ['a 96-byte body', `${VERSION}${stanzaText(['g'], randomBytes(96))}`],
    ['every printable argument character', `${VERSION}-> ${argumentsOfEveryCharacter()}\n\n`],
  ])('accepts a stanza with %s', (_, start) => {
    const parsed = parseHeader(Buffer.from(`${start}${x}---${MAC}`, 'latin1'));
    expect(parsed.header.stanzas).toHaveLength(2);
    expect(parsed.header.stanzas[1]?.args[0]).toBe('X25519');
  });

  it('fails at the first line of a file that is not age, without waiting for a newline', () => {
    const parser = new HeaderParser();
    expect(() => parser.push(Buffer.from('this is a plaintext file, not age'))).toThrow(
      /first line is not age-encryption.org\/v1/,
    );
    expect(() => new HeaderParser().push(Buffer.from('{"json":true}\n'))).toThrow(malformed);
  });

  it('fails an overlong body line before its newline arrives', () => {
    const parser = new HeaderParser();
    expect(parser.push(Buffer.from(`${VERSION}-> a\n${'A'.repeat(64)}`))).toBeUndefined();
    expect(() => parser.push(Buffer.from('A'))).toThrow(/longer than 64 columns/);
  });

  it(`refuses a header longer than ${MAX_HEADER_BYTES} bytes as it arrives`, () => {
    const parser = new HeaderParser();
    parser.push(Buffer.from(`${VERSION}-> `));
    const piece = Buffer.alloc(64 * 1024, 'a');
    let pushed = 0;
    expect(() => {
      for (;;) {
        parser.push(piece);
        pushed++;
      }
    }).toThrow(/header is longer than/);
    expect(pushed).toBe(MAX_HEADER_BYTES / piece.length - 1);
  });

  it('never quotes the file in its messages', () => {
    const secret = 'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ';
    for (const text of [`${secret}\n`, `${VERSION}-> ${secret}\n${secret}\n---${MAC}`]) {
      expect(() => parseHeader(Buffer.from(text))).toThrow(malformed);
      try {
        parseHeader(Buffer.from(text));
      } catch (err) {
        expect(String(err)).not.toContain('QQQQ');
      }
    }
  });
});

describe('base64', () => {
  it('round-trips canonical unpadded base64 and rejects every other spelling', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 60 }), (bytes) => {
        const text = encodeBase64(bytes);
        expect(text).toBe(b64(bytes));
        expect(Buffer.from(decodeBase64(text) ?? []).equals(Buffer.from(bytes))).toBe(true);
        if (bytes.length % 3 !== 0) expect(decodeBase64(`${text}=`)).toBeNull();
        expect(decodeBase64(` ${text}`)).toBeNull();
      }),
    );
    expect(decodeBase64('A')).toBeNull();
    expect(decodeBase64('AB')).toBeNull();
    expect(decodeBase64('-_')).toBeNull();
    expect(encodeMacLine(new Uint8Array(32))).toBe(` ${'A'.repeat(43)}\n`);
  });
});

function argumentsOfEveryCharacter(): string {
  const all = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i));
  return [all.slice(0, 30), all.slice(30, 60), all.slice(60)].map((a) => a.join('')).join(' ');
}

describe('parsing a large input that is not age', () => {
  it('names its first line, even without a newline in it', () => {
    const big = Buffer.alloc(64 * 1024 * 1024, 'x');
    expect(() => parseHeader(big)).toThrow(/first line is not age-encryption.org\/v1/);
    const parser = new HeaderParser();
    parser.push(Buffer.from('age-encryption.org/v1\n-> '));
    expect(() => parser.push(big)).toThrow(/header is longer than/);
  });
});
