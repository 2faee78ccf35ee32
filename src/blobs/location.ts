import { sep } from 'node:path';

/**
 * A blob's location, as a row of the chat store gives it: a key relative to its blob store.
 * The value comes from the chat store and is untrusted: a location that could name
 * something outside the store (absolute, `..`, a NUL) is refused here, before any read.
 */

const MAX_LOCATION_BYTES = 1024;
const MAX_SEGMENT_BYTES = 255;
// C0 controls and DEL: a NUL ends a path in the kernel, the others mangle logs and keys.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Why `location` is not a usable relative key, or null when it is: non-empty, at most 1024
 * UTF-8 bytes, `/`-separated segments that are non-empty, not `.` or `..`, at most 255
 * bytes, with no backslash or control character, and not starting with `/`.
 */
export function locationProblem(location: string): string | null {
  if (location === '') return 'is empty';
  if (CONTROL.test(location)) return 'contains a control character (NUL, newline, …)';
  if (location.includes('\\')) return "contains a backslash; a location is a key relative to the store, with '/' between segments";
  if (location.startsWith('/')) return "starts with '/'; a location is relative to its blob store";
  if (Buffer.from(location, 'utf8').toString('utf8') !== location) return 'is not valid Unicode';
  if (Buffer.byteLength(location, 'utf8') > MAX_LOCATION_BYTES) return `is longer than ${MAX_LOCATION_BYTES} bytes`;
  for (const segment of location.split('/')) {
    if (segment === '') return "has an empty segment ('//' or a trailing '/')";
    if (segment === '.' || segment === '..') return `has a '${segment}' segment, which would leave the store`;
    if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) return `has a segment longer than ${MAX_SEGMENT_BYTES} bytes`;
  }
  return null;
}

/** True when `path` lies strictly below the directory `root` (both absolute, resolved). */
export function isInside(root: string, path: string): boolean {
  return path.startsWith(root === sep ? sep : `${root}${sep}`);
}
