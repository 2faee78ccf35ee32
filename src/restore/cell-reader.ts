import { createHash } from 'node:crypto';
import { cellKey, equalConstantTime, openSealed, openSealedStream } from '../crypto/index.ts';
import { isLetheError } from '../errors/index.ts';
import type { OpenedKey } from '../keys/index.ts';
import type { CellEntry } from '../manifest/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import { isBlobTable } from '../blobs/index.ts';

/** Ranges up to this size are fetched, checked and decrypted in memory. */
export const IN_MEMORY_CELL_BYTES = 32 << 20;
const SLICE_BYTES = 8 << 20;

/** A cell ready to load: its plaintext (checked), or why not. */
export type ReadCell =
  | { readonly status: 'ok'; readonly plaintext: AsyncIterable<Uint8Array> | Uint8Array; readonly rows: number }
  | { readonly status: 'shredded'; readonly destroyed: readonly string[] }
  | { readonly status: 'failed'; readonly problem: string };

function countRows(bytes: Uint8Array): number {
  let rows = 0;
  let at = -1;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  while ((at = buf.indexOf(0x0a, at + 1)) !== -1) rows += 1;
  return rows;
}

async function* slices(store: ObjectStore, cell: CellEntry, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < cell.length; at += SLICE_BYTES) {
    const length = Math.min(SLICE_BYTES, cell.length - at);
    yield await store.getRange(cell.pack, cell.offset + at, length, signal === undefined ? {} : { signal });
  }
}

function problemOf(err: unknown): string {
  if (isLetheError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export interface ReadCellOptions {
  readonly store: ObjectStore;
  /** The tuple key of the cell's tuple under its encapsulation. */
  readonly key: OpenedKey;
  /** The cell's ciphertext when the caller fetched it already (with its neighbours in one read). */
  readonly ciphertext?: Uint8Array | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** Why a cell's key cannot be had, as a ReadCell; null when it can. */
export function keyProblem(key: OpenedKey): ReadCell | null {
  if (key.ok) return null;
  if ('destroyed' in key) return { status: 'shredded', destroyed: key.destroyed };
  if ('problem' in key) return { status: 'failed', problem: key.problem };
  return { status: 'failed', problem: `its key ${key.missing} is not in the vault` };
}

/**
 * Checks one cell's ciphertext against the sha256 in the (authenticated) manifest BEFORE
 * decrypting, opens it with its cell key (ChaCha20-Poly1305: the tag authenticates it under
 * a key only its dimension keys give) and checks the row count.
 *
 * Cells up to {@link IN_MEMORY_CELL_BYTES} are checked completely before anything is
 * returned. A larger cell is hashed in slices first, then decrypted as a stream whose tag
 * and row count are checked as it ends (the stream throws otherwise), so the caller must
 * load it inside a transaction it can roll back.
 */
export async function readCell(cell: CellEntry, options: ReadCellOptions): Promise<ReadCell> {
  const { key, store } = options;
  const problem = keyProblem(key);
  if (problem !== null || !key.ok) return problem as ReadCell;
  const signalOpt = options.signal === undefined ? {} : { signal: options.signal };
  const mismatch = (sha: string): ReadCell => ({
    status: 'failed',
    problem: `ciphertext sha256 ${sha} does not match the manifest (${cell.sha256}): the pack was modified`,
  });
  try {
    const k = cellKey(key.prk, cell.id);
    if (cell.length <= IN_MEMORY_CELL_BYTES) {
      const ciphertext = options.ciphertext ?? (await store.getRange(cell.pack, cell.offset, cell.length, signalOpt));
      const sha = createHash('sha256').update(ciphertext).digest('hex');
      if (!equalConstantTime(sha, cell.sha256)) return mismatch(sha);
      const plaintext = openSealed(k, ciphertext, `cell ${cell.id}`);
      // A blob cell (a file) is one "row" of bytesPlain bytes: its length is what is checked.
      if (isBlobTable(cell.table)) {
        if (plaintext.length !== cell.bytesPlain) return { status: 'failed', problem: `holds ${plaintext.length} bytes, the manifest says ${cell.bytesPlain}` };
        return { status: 'ok', plaintext, rows: cell.rows };
      }
      const rows = countRows(plaintext);
      if (rows !== cell.rows) return { status: 'failed', problem: `holds ${rows} rows, the manifest says ${cell.rows}` };
      return { status: 'ok', plaintext, rows };
    }

    const hash = createHash('sha256');
    for await (const slice of slices(store, cell, options.signal)) hash.update(slice);
    const sha = hash.digest('hex');
    if (!equalConstantTime(sha, cell.sha256)) return mismatch(sha);
    const decrypted = openSealedStream(k, slices(store, cell, options.signal), `cell ${cell.id}`);
    const blob = isBlobTable(cell.table);
    async function* checked(): AsyncGenerator<Uint8Array> {
      let rows = 0;
      for await (const chunk of decrypted) {
        rows += blob ? chunk.length : countRows(chunk);
        yield chunk;
      }
      const expected = blob ? cell.bytesPlain : cell.rows;
      if (rows !== expected) throw new Error(`cell ${cell.id}: holds ${rows} ${blob ? 'bytes' : 'rows'}, the manifest says ${expected}`);
    }
    return { status: 'ok', plaintext: checked(), rows: cell.rows };
  } catch (err) {
    return { status: 'failed', problem: problemOf(err) };
  }
}
