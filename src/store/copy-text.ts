/**
 * Encoding of values in PostgreSQL's COPY text format (tab-delimited, `\N` for NULL,
 * backslash escapes). Only what the generator writes is covered: text, bigint, boolean,
 * timestamptz and bytea.
 */

/** The COPY text representation of SQL NULL. */
export const COPY_NULL = '\\N';

const NEEDS_ESCAPE = /[\\\n\r\t]/;
const ESCAPABLE = /[\\\n\r\t]/g;
const ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/**
 * Escapes a text value for COPY text format: backslash, newline, carriage return and tab
 * become two-character escapes; every other character (any UTF-8) passes through. The
 * result never contains a raw tab or line break, so it cannot split a field or a row.
 */
export function copyText(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replace(ESCAPABLE, (c) => ESCAPES[c] ?? c);
}

/** A text value or NULL. */
export function copyNullableText(value: string | null): string {
  return value === null ? COPY_NULL : copyText(value);
}

/** A bytea value in hex format (`\x…`), with its backslash escaped for COPY. */
export function copyBytea(value: Uint8Array): string {
  return `\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
}

/** A timestamptz value from epoch milliseconds, in ISO 8601 UTC (`2026-10-31T23:59:59.000Z`). */
export function copyTimestamp(epochMs: number): string {
  return new Date(epochMs).toISOString();
}

/** A boolean value. */
export function copyBool(value: boolean): string {
  return value ? 't' : 'f';
}

/** A row: fields already encoded with the functions above, joined by tab, ending in newline. */
export function copyRow(fields: readonly string[]): string {
  return `${fields.join('\t')}\n`;
}
