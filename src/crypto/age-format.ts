// The text of an age v1 header (age-encryption.org/v1, "Header"): encoding and strict parsing.
// No cryptography here; the file key and the MAC are in age-header.ts.
import { AgeFailure, AgeProblem } from './age-errors.ts';

/**
 * One recipient stanza: the arguments after `->` and the raw body. Shaped like the age
 * library's `Stanza`, so recipients and identities written against either interoperate.
 */
export interface Stanza {
  readonly args: string[];
  readonly body: Uint8Array;
}

/** A parsed header. */
export interface Header {
  readonly stanzas: Stanza[];
  /** The header up to and including `---`: the bytes its MAC covers. */
  readonly macInput: Uint8Array;
  /** The 32-byte MAC from the closing line. */
  readonly mac: Uint8Array;
}

export const VERSION_LINE = 'age-encryption.org/v1';
const MAC_BYTES = 32;
const BODY_LINE_BYTES = 48;
const BODY_LINE_COLUMNS = 64;
// " " + 43 base64 characters + "\n": what follows "---" on the closing line.
const MAC_LINE_TAIL = 45;
const ARGUMENT = /^[\x21-\x7e]+$/;

/**
 * Headers longer than this are refused. The format sets no limit, but a stream's header is
 * held in memory until its MAC line, and every stanza may cost a scalar multiplication before
 * the MAC can be checked. 1 MiB is about 10,000 X25519 stanzas; lethe writes a handful.
 */
export const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * Canonical unpadded base64 (RFC 4648 standard alphabet), as age writes it. Never throws.
 */
export function encodeBase64(bytes: Uint8Array): string {
  const padded = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  const pad = padded.endsWith('==') ? 2 : padded.endsWith('=') ? 1 : 0;
  return pad === 0 ? padded : padded.slice(0, -pad);
}

/**
 * Decodes canonical unpadded base64, or returns null: Node's decoder skips characters outside
 * the alphabet, accepts the URL-safe one and ignores non-zero trailing bits, so the result is
 * re-encoded and compared, which rejects all of those.
 */
export function decodeBase64(text: string): Buffer | null {
  const bytes = Buffer.from(text, 'base64');
  return encodeBase64(bytes) === text ? bytes : null;
}

/**
 * The header without its MAC: the version line, each stanza (arguments line, then the body in
 * 64-column base64 lines, the last one shorter, so an empty line ends a body whose length is a
 * multiple of 48 bytes), and `---`. Byte for byte what age and the age library write.
 * Throws TypeError for a stanza that could not be parsed back (an empty or non-ASCII argument).
 */
export function encodeHeaderWithoutMac(stanzas: readonly Stanza[]): string {
  let text = `${VERSION_LINE}\n`;
  for (const { args, body } of stanzas) {
    if (args.length === 0 || !args.every((arg) => ARGUMENT.test(arg))) {
      throw new TypeError('an age stanza needs one or more non-empty printable ASCII arguments');
    }
    text += `-> ${args.join(' ')}\n`;
    const encoded = encodeBase64(body);
    for (let at = 0; at < encoded.length; at += BODY_LINE_COLUMNS) {
      text += `${encoded.slice(at, at + BODY_LINE_COLUMNS)}\n`;
    }
    if (body.length % BODY_LINE_BYTES === 0) text += '\n';
  }
  return `${text}---`;
}

/** The closing line that follows {@link encodeHeaderWithoutMac}'s `---`. */
export function encodeMacLine(mac: Uint8Array): string {
  return ` ${encodeBase64(mac)}\n`;
}

/** Parses a whole header at the start of `file`; throws AgeFailure(MALFORMED) as the parser does. */
export function parseHeader(file: Uint8Array): { header: Header; rest: Uint8Array } {
  const parsed = new HeaderParser().push(file);
  if (parsed === undefined) throw malformed('the file ends inside its header');
  return parsed;
}

type State = 'version' | 'stanza' | 'body';

/**
 * An incremental, strict parser of an age v1 header: push bytes as they arrive until it
 * returns the header and the bytes after it. Throws AgeFailure(MALFORMED) on the first line
 * that breaks the format (so a file that is not age fails at its first line): a version line
 * other than age-encryption.org/v1, a byte outside printable ASCII (so CRLF line ends too), a
 * stanza without arguments or with an empty one, a body line over 64 columns or not canonical
 * base64, a body not ended by a short line, no stanza at all, a malformed MAC line, or a header
 * over {@link MAX_HEADER_BYTES}. Messages never quote the file.
 */
export class HeaderParser {
  #state: State = 'version';
  readonly #stanzas: Stanza[] = [];
  #args: string[] = [];
  #body: Buffer[] = [];
  /** Earlier pushes, all header bytes; kept for the MAC. */
  readonly #seen: Uint8Array[] = [];
  /** Pieces of the line not yet ended by a newline. */
  #partial: Uint8Array[] = [];
  #partialLength = 0;
  #size = 0;
  #done = false;

  /**
   * Feeds the next bytes of the file. Returns undefined while the header is incomplete, then
   * once the header and the bytes of this push that follow it. Throws after it has returned.
   */
  push(bytes: Uint8Array): { header: Header; rest: Uint8Array } | undefined {
    if (this.#done) throw new Error('HeaderParser.push called after the header was complete');
    let from = 0;
    for (;;) {
      // No need to look further than the header may reach (the input may be a large file).
      const reach = Math.min(bytes.length, from + MAX_HEADER_BYTES - this.#size + 1);
      const found = bytes.subarray(from, reach).indexOf(0x0a);
      const newline = found < 0 ? -1 : from + found;
      const end = newline < 0 ? bytes.length : newline;
      this.#checkLineLength(this.#partialLength + end - from);
      this.#checkSize(this.#size + end - from + (newline < 0 ? 0 : 1));
      if (newline < 0) {
        // A copy (Buffer#slice would not make one): a source may reuse its buffer once it
        // has handed it over.
        const kept = new Uint8Array(bytes);
        this.#seen.push(kept);
        this.#keepPartial(kept.subarray(from));
        return undefined;
      }
      const mac = this.#line(this.#takeLine(bytes.subarray(from, newline)));
      from = newline + 1;
      if (mac !== undefined) {
        this.#done = true;
        const whole = concat([...this.#seen, bytes.subarray(0, from)], this.#size);
        return {
          header: {
            stanzas: this.#stanzas,
            macInput: whole.subarray(0, whole.length - MAC_LINE_TAIL),
            mac,
          },
          rest: bytes.subarray(from),
        };
      }
    }
  }

  #checkSize(size: number): void {
    this.#size = size;
    if (size > MAX_HEADER_BYTES) {
      throw malformed(`its header is longer than ${MAX_HEADER_BYTES} bytes`);
    }
  }

  /** Fails a file that is not age, or an overlong body line, before its newline arrives. */
  #checkLineLength(length: number): void {
    if (this.#state === 'version' && length > VERSION_LINE.length) {
      throw malformed(`its first line is not ${VERSION_LINE}`);
    }
    if (this.#state === 'body' && length > BODY_LINE_COLUMNS) {
      throw malformed(`a stanza body line is longer than ${BODY_LINE_COLUMNS} columns`);
    }
  }

  #keepPartial(piece: Uint8Array): void {
    this.#partial.push(piece);
    this.#partialLength += piece.length;
  }

  #takeLine(last: Uint8Array): string {
    const line =
      this.#partial.length === 0
        ? last
        : concat([...this.#partial, last], this.#partialLength + last.length);
    this.#partial = [];
    this.#partialLength = 0;
    // The version line is compared whole, which says more about a file that is not age.
    if (this.#state !== 'version') checkAscii(line);
    return Buffer.from(line.buffer, line.byteOffset, line.byteLength).toString('latin1');
  }

  /** Handles one complete line; returns the MAC when it was the closing line. */
  #line(line: string): Buffer | undefined {
    switch (this.#state) {
      case 'version':
        if (line !== VERSION_LINE) throw malformed(`its first line is not ${VERSION_LINE}`);
        this.#state = 'stanza';
        return undefined;
      case 'stanza':
        if (line.startsWith('---')) return this.#macLine(line);
        this.#stanzaLine(line);
        return undefined;
      case 'body':
        this.#bodyLine(line);
        return undefined;
    }
  }

  #stanzaLine(line: string): void {
    const [prefix, ...args] = line.split(' ');
    if (prefix !== '->') {
      throw malformed('a header line is neither a recipient stanza nor the MAC line');
    }
    if (args.length === 0 || args.some((arg) => arg === '')) {
      throw malformed('a recipient stanza has no arguments or an empty one');
    }
    this.#args = args;
    this.#body = [];
    this.#state = 'body';
  }

  #bodyLine(line: string): void {
    if (line.length > BODY_LINE_COLUMNS) {
      throw malformed(`a stanza body line is longer than ${BODY_LINE_COLUMNS} columns`);
    }
    const bytes = decodeBase64(line);
    if (bytes === null) throw malformed('a stanza body line is not canonical unpadded base64');
    this.#body.push(bytes);
    if (bytes.length < BODY_LINE_BYTES) {
      this.#stanzas.push({ args: this.#args, body: new Uint8Array(Buffer.concat(this.#body)) });
      this.#state = 'stanza';
    }
  }

  #macLine(line: string): Buffer {
    if (this.#stanzas.length === 0) throw malformed('its header has no recipient stanza');
    const mac = line.startsWith('--- ') ? decodeBase64(line.slice(4)) : null;
    if (mac?.length !== MAC_BYTES) throw malformed('its header MAC line is malformed');
    return mac;
  }
}

function checkAscii(line: Uint8Array): void {
  for (const byte of line) {
    if (byte < 0x20 || byte > 0x7e) {
      throw malformed('its header has a byte that is not printable ASCII');
    }
  }
}

function malformed(detail: string): AgeFailure {
  return new AgeFailure(AgeProblem.MALFORMED, detail);
}

function concat(pieces: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}
