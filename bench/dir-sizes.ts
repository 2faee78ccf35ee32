import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';

/**
 * Bytes under `dir` per top-level entry (`packs`, `snapshots`, `keys` in lethe's object
 * store; `data`, `index`, `snapshots` in a restic repository): the sum of the files'
 * sizes, not the blocks they occupy, so the figures do not depend on the file system.
 */
export async function bytesByTopLevel(dir: string): Promise<Record<string, number>> {
  const sizes: Record<string, number> = {};
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    const top = relative(dir, path).split(sep)[0] ?? '';
    sizes[top] = (sizes[top] ?? 0) + (await stat(path)).size;
  }
  return sizes;
}

/** `after - before`, per key. */
export function growth(
  after: Readonly<Record<string, number>>,
  before: Readonly<Record<string, number>>,
): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

/** The sum of the values: everything a step added, all prefixes together. */
export function totalBytes(sizes: Readonly<Record<string, number>>): number {
  return Object.values(sizes).reduce((a, b) => a + b, 0);
}
