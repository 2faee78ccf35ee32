/**
 * Just enough of PostgreSQL's COPY text format to read the leading key fields of a row.
 * Row payloads are never decoded: they go into cells byte for byte, exactly as COPY wrote
 * them, because that is what COPY FROM will read back on restore.
 */

const NEWLINE = 0x0a;
const TAB = 0x09;

/**
 * Splits a COPY text stream into lines, each including its trailing newline. Embedded
 * newlines in values are escaped as `\n` by COPY, so a raw 0x0A always ends a row.
 * Throws when the stream ends in the middle of a line (a truncated COPY).
 */
export async function* copyLines(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of source) {
    const buf = rest.length === 0 ? Buffer.from(chunk) : Buffer.concat([rest, chunk]);
    let start = 0;
    for (;;) {
      const end = buf.indexOf(NEWLINE, start);
      if (end < 0) break;
      yield buf.subarray(start, end + 1);
      start = end + 1;
    }
    rest = buf.subarray(start);
  }
  if (rest.length > 0) throw new Error('COPY output ended in the middle of a row');
}

/**
 * Positions of the first `count` field separators of a line; throws when there are fewer.
 */
export function fieldEnds(line: Buffer, count: number): number[] {
  const ends: number[] = [];
  let from = 0;
  for (let i = 0; i < count; i++) {
    const at = line.indexOf(TAB, from);
    if (at < 0) throw new Error(`COPY row has fewer than ${count + 1} fields`);
    ends.push(at);
    from = at + 1;
  }
  return ends;
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
  '\\': '\\',
};

/** Decodes one COPY text field; `\N` is SQL NULL. */
export function decodeCopyField(raw: string): string | null {
  if (raw === '\\N') return null;
  if (!raw.includes('\\')) return raw;
  const bytes: number[] = [];
  const utf8 = Buffer.from(raw, 'utf8');
  for (let i = 0; i < utf8.length; i++) {
    const byte = utf8[i] as number;
    if (byte !== 0x5c || i + 1 >= utf8.length) {
      bytes.push(byte);
      continue;
    }
    const next = String.fromCharCode(utf8[i + 1] as number);
    const simple = SIMPLE_ESCAPES[next];
    if (simple !== undefined) {
      bytes.push(simple.charCodeAt(0));
      i += 1;
    } else if (next === 'x') {
      const hex = /^[0-9a-fA-F]{1,2}/.exec(utf8.subarray(i + 2, i + 4).toString('latin1'))?.[0] ?? '';
      bytes.push(parseInt(hex === '' ? '0' : hex, 16));
      i += 1 + hex.length;
    } else if (next >= '0' && next <= '7') {
      const oct = /^[0-7]{1,3}/.exec(utf8.subarray(i + 1, i + 4).toString('latin1'))?.[0] ?? '0';
      bytes.push(parseInt(oct, 8) & 0xff);
      i += oct.length;
    } else {
      // COPY treats any other backslash-escaped character as itself.
      bytes.push(utf8[i + 1] as number);
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
