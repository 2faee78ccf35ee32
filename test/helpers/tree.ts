import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { CellEntry, SegmentEntry } from '../../src/manifest/index.ts';

/** A stored v4 manifest as JSON, with the cells of its segments read from a filesystem store (no checks: for tests). */
export interface TreeManifest {
  readonly snapshot: { readonly id: string; readonly tables: { name: string; columns: string[] }[] } & Record<string, unknown>;
  readonly segments: SegmentEntry[];
  readonly encapsulations: { id: string; tenant: string | null; kem: string; ephemeral: string }[];
  readonly totals: Record<string, unknown>;
  readonly cells: CellEntry[];
}

/** Reads the manifest at `manifestKey` in the filesystem store at `dir` and every segment it lists. */
export async function readTree(dir: string, manifestKey: string): Promise<TreeManifest> {
  const manifest = JSON.parse(gunzipSync(await readFile(join(dir, manifestKey))).toString('utf8')) as Omit<TreeManifest, 'cells'>;
  const cells: CellEntry[] = [];
  for (const segment of manifest.segments) {
    const parsed = JSON.parse(gunzipSync(await readFile(join(dir, segment.key))).toString('utf8')) as { cells: CellEntry[] };
    cells.push(...parsed.cells);
  }
  return { ...manifest, cells };
}
