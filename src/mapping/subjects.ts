/**
 * The canonical text of a row's subject set: the distinct non-null ids of its subject
 * columns, sorted in byte order, each with `\` and `,` escaped by a backslash, joined by
 * `,`; NULL when the set is empty. The cell query computes it in SQL (the author field of
 * its output); these functions are its TypeScript side. For one id without `\` or `,` the
 * text is the id itself.
 */

/** The canonical text of `ids` (deduplicated and sorted here); null for no id. */
export function encodeSubjects(ids: readonly string[]): string | null {
  if (ids.length === 0) return null;
  const sorted = [...new Set(ids)].sort(compareBytes);
  return sorted.map((id) => id.replaceAll('\\', '\\\\').replaceAll(',', '\\,')).join(',');
}

/**
 * The ids of a canonical subject text, in its order; [] for null. Does not re-sort: the
 * text is the server's, and its order is what cell ids and key derivation follow.
 */
export function decodeSubjects(text: string | null): string[] {
  if (text === null) return [];
  const ids: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === '\\' && i + 1 < text.length) {
      current += text[i + 1] as string;
      i += 1;
    } else if (ch === ',') {
      ids.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  ids.push(current);
  return ids;
}

/** Byte order of UTF-8 (PostgreSQL's `COLLATE "C"`), which differs from UTF-16 order above U+FFFF. */
function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
