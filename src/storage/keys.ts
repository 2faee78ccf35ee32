import { ErrorCode, LetheError } from '../errors/index.ts';

/** S3's limit on a whole key, prefix included. */
export const MAX_KEY_BYTES = 1024;

/**
 * Longest segment, in UTF-8 bytes. Filesystems allow 255-byte names; the filesystem
 * backend appends up to 27 bytes to a key's last segment for its temp and lock files.
 */
export const MAX_SEGMENT_BYTES = 200;

/**
 * Top-level names the filesystem backend keeps for itself (temp files, lock records, the
 * marker `lethe init` writes); refused on every backend, never listed.
 */
export const RESERVED_TOP_LEVEL: readonly string[] = ['.incomplete', '.locks', '.lethe-store'];

// C0 controls, DEL and C1 controls: invisible in listings and logs, and some stores mangle them.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function reject(kind: string, value: string, why: string): never {
  throw new LetheError(
    ErrorCode.STORAGE,
    `invalid object ${kind} ${JSON.stringify(value)}: ${why}`,
    { details: { [kind]: value } },
  );
}

/** Checks what keys and prefixes share; returns the segments. */
function checkPath(kind: 'key' | 'prefix', value: string): string[] {
  if (CONTROL.test(value)) reject(kind, value, 'contains a control character');
  if (value.includes('\\')) reject(kind, value, "contains a backslash; use '/' between segments");
  if (value.startsWith('/')) reject(kind, value, "starts with '/'; keys are relative");
  // Lone surrogates cannot be encoded as UTF-8, which S3 keys must be.
  if (Buffer.from(value, 'utf8').toString('utf8') !== value) {
    reject(kind, value, 'is not valid Unicode');
  }
  if (Buffer.byteLength(value, 'utf8') > MAX_KEY_BYTES) {
    reject(kind, value, `is longer than ${MAX_KEY_BYTES} bytes`);
  }
  const segments = value.split('/');
  const first = segments[0];
  // A bare prefix like '.locks' may still match ordinary keys such as '.locksmith'.
  const whole = kind === 'key' || segments.length > 1;
  if (first !== undefined && whole && RESERVED_TOP_LEVEL.includes(first)) {
    reject(kind, value, `starts with the reserved name ${first}`);
  }
  for (const segment of segments) {
    if (segment === '.' || segment === '..') reject(kind, value, `has a '${segment}' segment`);
    if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) {
      reject(kind, value, `has a segment longer than ${MAX_SEGMENT_BYTES} bytes`);
    }
  }
  return segments;
}

/**
 * Throws STORAGE unless `key` is a valid object key: non-empty, at most 1024 UTF-8 bytes,
 * `/`-separated segments that are non-empty, not `.` or `..`, at most 200 bytes, with no
 * backslash or control character, and not under a reserved top-level name. The rules are
 * the same for every backend so that a key that works on one works on all.
 */
export function assertValidKey(key: string): void {
  if (key === '') reject('key', key, 'is empty');
  const segments = checkPath('key', key);
  if (segments.includes('')) reject('key', key, "has an empty segment ('//' or a trailing '/')");
}

/**
 * Throws STORAGE unless `prefix` could begin a valid key: '' (everything), or text obeying
 * the key rules except that it may end with '/' or stop mid-segment.
 */
export function assertValidPrefix(prefix: string): void {
  if (prefix === '') return;
  const segments = checkPath('prefix', prefix);
  if (segments.slice(0, -1).includes('')) reject('prefix', prefix, "has an empty segment ('//')");
}

/** Orders keys by their UTF-8 bytes, as S3 lists them (not by UTF-16 code units). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
