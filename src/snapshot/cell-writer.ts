import { createCellDigest, encryptBytes, encryptStream, equalConstantTime, type CellDigest } from '../crypto/index.ts';
import { cellId, cellKeyId, type CellRows, type CellTuple } from '../cells/index.ts';
import type { KeyMinter } from '../keys/index.ts';
import type { CellEntry } from '../manifest/index.ts';
import type { PackWriter } from './pack-writer.ts';

/** What the writer knows of the previous snapshot's copy of a cell. */
export interface PreviousCell {
  readonly key: string;
  /** The keyed digest of that copy's plaintext; null when the vault no longer has it. */
  readonly digest: string | null;
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  readonly sha256: string;
  readonly rows: number;
  readonly bytesPlain: number;
}

export type CellOutcome =
  /** `digest`: the keyed digest of the plaintext, for the vault only (never the manifest). */
  | { readonly kind: 'written'; readonly entry: CellEntry; readonly digest: string }
  | { readonly kind: 'reused'; readonly entry: CellEntry }
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
  /** The backup's digest key (derived from its signing key). */
  readonly digestKey: Uint8Array;
  /** The previous snapshot's copies of these cells of `table` (absent ones are new). */
  readonly previous: (cellIds: readonly string[]) => Promise<ReadonlyMap<string, PreviousCell>>;
  /** Cells up to this many plaintext bytes are held until their digest is known. */
  readonly bufferBytes: number;
  /** Cells held before their keys and previous copies are looked up together (default 1,000). */
  readonly batchCells?: number;
  /** Plaintext bytes held across a batch before it is written (default 8 MiB). */
  readonly batchBytes?: number;
  readonly signal?: AbortSignal;
}

/** A small cell read whole: its plaintext and digest are known. */
interface HeldCell {
  readonly id: string;
  readonly tuple: CellTuple;
  readonly plaintext: Buffer[];
  readonly rows: number;
  readonly bytesPlain: number;
  readonly digest: string;
}

const BATCH_CELLS = 1000;
const BATCH_BYTES = 8 * 1024 * 1024;

/**
 * Writes one table's cells into the pack stream, or references the previous snapshot's
 * copy of a cell whose keyed digest shows it unchanged. Small cells (up to `bufferBytes`)
 * are held in a batch until their digest is known; a batch's keys and previous copies are
 * then looked up with one vault query each, by primary key, so memory holds one batch and
 * never grows with the store. A cell larger than the buffer ends the batch and streams
 * straight through age into the pack with bounded memory, always written anew.
 *
 * Outcomes come back in the order the cells were added.
 */
export class CellWriter {
  private held: HeldCell[] = [];
  private heldBytes = 0;
  private readonly batchCells: number;
  private readonly batchBytes: number;
  private readonly prefix: Buffer;

  constructor(private readonly options: CellWriterOptions) {
    this.batchCells = options.batchCells ?? BATCH_CELLS;
    this.batchBytes = options.batchBytes ?? BATCH_BYTES;
    this.prefix = digestPrefix(options.table, options.columns);
  }

  /** Reads one cell's rows; returns the outcomes of the cells this finished (maybe none). */
  async add(cell: CellRows): Promise<CellOutcome[]> {
    const id = cellId(this.options.table, cell.tuple);
    const digest = createCellDigest(this.options.digestKey);
    digest.update(this.prefix);
    const plaintext: Buffer[] = [];
    let rows = 0;
    let bytesPlain = 0;
    const iterator = cell.rows[Symbol.asyncIterator]();
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) break;
      rows += 1;
      bytesPlain += next.value.length;
      digest.update(next.value);
      // A copy: the row may be a view into a much larger chunk of the COPY stream.
      plaintext.push(Buffer.from(next.value));
      if (bytesPlain > this.options.bufferBytes) {
        const done = await this.flush();
        done.push(await this.writeLarge(id, cell.tuple, { plaintext, rows, bytesPlain, digest, iterator }));
        return done;
      }
    }
    this.held.push({ id, tuple: cell.tuple, plaintext, rows, bytesPlain, digest: digest.digest() });
    this.heldBytes += bytesPlain;
    if (this.held.length >= this.batchCells || this.heldBytes >= this.batchBytes) return this.flush();
    return [];
  }

  /** Writes the held cells; returns their outcomes. Call once more after the last cell. */
  async flush(): Promise<CellOutcome[]> {
    const batch = this.held;
    this.held = [];
    this.heldBytes = 0;
    if (batch.length === 0) return [];
    const keys = await this.options.keys.cellKeys(batch.map((c) => c.tuple));
    const live = batch.filter((c) => {
      const key = keys.get(cellKeyId(c.tuple));
      return key !== undefined && !('destroyed' in key);
    });
    const previous = live.length === 0 ? new Map<string, PreviousCell>() : await this.options.previous(live.map((c) => c.id));
    const outcomes: CellOutcome[] = [];
    for (const cell of batch) {
      const key = keys.get(cellKeyId(cell.tuple));
      if (key === undefined) throw new Error(`no key was returned for cell ${cell.id}`);
      if ('destroyed' in key) {
        outcomes.push({ kind: 'shredded', cellId: cell.id, destroyedKey: key.destroyed, rows: cell.rows });
        continue;
      }
      const base = this.base(cell.id, cell.tuple, key.keyId);
      const prior = previous.get(cell.id);
      if (prior?.digest != null && prior.key === key.keyId && equalConstantTime(prior.digest, cell.digest)) {
        outcomes.push({
          kind: 'reused',
          entry: {
            ...base,
            pack: prior.pack,
            offset: prior.offset,
            length: prior.length,
            sha256: prior.sha256,
            rows: cell.rows,
            bytesPlain: cell.bytesPlain,
            reused: true,
          },
        });
        continue;
      }
      const ciphertext = await encryptBytes(Buffer.concat(cell.plaintext), [key.recipient]);
      cell.plaintext.length = 0;
      const location = await this.options.packs.writeCell(ciphertext);
      outcomes.push({
        kind: 'written',
        entry: { ...base, ...location, rows: cell.rows, bytesPlain: cell.bytesPlain, reused: false },
        digest: cell.digest,
      });
    }
    return outcomes;
  }

  /** A cell larger than the buffer: replay what was read, then stream the rest, hashing as it passes. */
  private async writeLarge(
    id: string,
    tuple: CellTuple,
    read: { plaintext: Buffer[]; rows: number; bytesPlain: number; digest: CellDigest; iterator: AsyncIterator<Buffer> },
  ): Promise<CellOutcome> {
    const key = await this.options.keys.cellKey(tuple);
    const counted = { rows: read.rows, bytesPlain: read.bytesPlain };
    const { iterator, digest } = read;
    if ('destroyed' in key) {
      read.plaintext.length = 0;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) break;
        counted.rows += 1;
      }
      return { kind: 'shredded', cellId: id, destroyedKey: key.destroyed, rows: counted.rows };
    }
    async function* plaintext(): AsyncGenerator<Uint8Array> {
      for (const chunk of read.plaintext.splice(0)) yield chunk;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        counted.rows += 1;
        counted.bytesPlain += next.value.length;
        digest.update(next.value);
        yield next.value;
      }
    }
    const location = await this.options.packs.writeCell(
      encryptStream(plaintext(), [key.recipient], this.options.signal === undefined ? {} : { signal: this.options.signal }),
    );
    return {
      kind: 'written',
      entry: {
        ...this.base(id, tuple, key.keyId),
        ...location,
        rows: counted.rows,
        bytesPlain: counted.bytesPlain,
        reused: false,
      },
      digest: digest.digest(),
    };
  }

  private base(id: string, tuple: CellTuple, keyId: string): Pick<CellEntry, 'id' | 'table' | 'tenant' | 'class' | 'period' | 'author' | 'key'> {
    return {
      id,
      table: this.options.table,
      tenant: tuple.tenant,
      class: tuple.class,
      period: tuple.period,
      author: tuple.author,
      key: keyId,
    };
  }
}
