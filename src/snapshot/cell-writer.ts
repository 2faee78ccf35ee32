import { createCellDigest, encryptBytes, encryptStream } from '../crypto/index.ts';
import { cellId, type CellRows } from '../cells/index.ts';
import type { KeyMinter } from '../keys/index.ts';
import type { CellEntry } from '../manifest/index.ts';
import type { PackWriter } from './pack-writer.ts';

/** What the writer knows of the previous snapshot's copy of a cell. */
export interface PreviousCell {
  readonly key: string;
  readonly digest: string;
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  readonly sha256: string;
  readonly rows: number;
  readonly bytesPlain: number;
}

export type CellOutcome =
  | { readonly kind: 'written' | 'reused'; readonly entry: CellEntry }
  | { readonly kind: 'shredded'; readonly cellId: string; readonly destroyedKey: string; readonly rows: number };

/**
 * The keyed digest's domain: the table and its column list are bound in, so a cell is only
 * ever considered unchanged against the same table with the same columns.
 */
export function digestPrefix(table: string, columns: readonly string[]): Buffer {
  return Buffer.from(`lethe.cell.v1\0${table}\0${columns.join(',')}\n`, 'utf8');
}

export interface CellWriterOptions {
  readonly table: string;
  readonly columns: readonly string[];
  readonly packs: PackWriter;
  readonly keys: KeyMinter;
  readonly digestKeyFor: (tenant: string | null) => Promise<Uint8Array>;
  readonly previous: ReadonlyMap<string, PreviousCell>;
  /** Cells up to this many plaintext bytes are held until their digest is known. */
  readonly bufferBytes: number;
  readonly signal?: AbortSignal;
}

/**
 * Encrypts one cell into the pack stream, or references the previous snapshot's copy when
 * the keyed digest shows it unchanged. Small cells are buffered (so an unchanged one costs
 * no encryption and no upload); a cell larger than the buffer streams straight through
 * age into the pack with bounded memory, and is always written anew.
 */
export async function writeCell(cell: CellRows, options: CellWriterOptions): Promise<CellOutcome> {
  const id = cellId(options.table, cell.tuple);
  const key = await options.keys.cellKey(cell.tuple);
  const digest = createCellDigest(await options.digestKeyFor(cell.tuple.tenant));
  digest.update(digestPrefix(options.table, options.columns));
  let rows = 0;
  let bytesPlain = 0;

  if ('destroyed' in key) {
    for await (const _row of cell.rows) rows += 1;
    return { kind: 'shredded', cellId: id, destroyedKey: key.destroyed, rows };
  }

  const buffered: Buffer[] = [];
  const iterator = cell.rows[Symbol.asyncIterator]();
  let overflow = false;
  for (;;) {
    const next = await iterator.next();
    if (next.done === true) break;
    rows += 1;
    bytesPlain += next.value.length;
    digest.update(next.value);
    buffered.push(Buffer.from(next.value));
    if (bytesPlain > options.bufferBytes) {
      overflow = true;
      break;
    }
  }

  const base = {
    id,
    table: options.table,
    tenant: cell.tuple.tenant,
    class: cell.tuple.class,
    period: cell.tuple.period,
    author: cell.tuple.author,
    key: key.keyId,
  };

  if (!overflow) {
    const hex = digest.digest();
    const prior = options.previous.get(id);
    if (prior !== undefined && prior.digest === hex && prior.key === key.keyId) {
      const entry: CellEntry = {
        ...base,
        pack: prior.pack,
        offset: prior.offset,
        length: prior.length,
        sha256: prior.sha256,
        digest: hex,
        rows,
        bytesPlain,
        reused: true,
      };
      return { kind: 'reused', entry };
    }
    const ciphertext = await encryptBytes(Buffer.concat(buffered), [key.recipient]);
    const location = await options.packs.writeCell(ciphertext);
    return { kind: 'written', entry: { ...base, ...location, digest: hex, rows, bytesPlain, reused: false } };
  }

  // Large cell: replay what was buffered, then stream the rest, hashing as it passes.
  const counted = { rows, bytesPlain };
  async function* plaintext(): AsyncGenerator<Uint8Array> {
    for (const chunk of buffered.splice(0)) yield chunk;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return;
      counted.rows += 1;
      counted.bytesPlain += next.value.length;
      digest.update(next.value);
      yield next.value;
    }
  }
  const location = await options.packs.writeCell(
    encryptStream(plaintext(), [key.recipient], options.signal === undefined ? {} : { signal: options.signal }),
  );
  return {
    kind: 'written',
    entry: { ...base, ...location, digest: digest.digest(), rows: counted.rows, bytesPlain: counted.bytesPlain, reused: false },
  };
}
