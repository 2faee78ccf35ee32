import { createHmac } from 'node:crypto';
import { cellId, cellKeyId, RowFingerprint, type CellRows, type CellTuple } from '../cells/index.ts';
import { cellKey, equalConstantTime, seal, sealStream } from '../crypto/index.ts';
import type { Encapsulator, LiveTupleKey } from '../keys/index.ts';
import type { CellEntry } from '../manifest/index.ts';
import type { PackWriter } from './pack-writer.ts';

/** What the writer knows of the current copy of a cell (in the previous snapshot). */
export interface PreviousCell {
  /** The vault's id of the copy. */
  readonly copyId: string;
  /** Its keyed fingerprint; null when unknown. */
  readonly fingerprint: string | null;
  readonly key: string;
  readonly encapsulation: string;
  /** The keyed digest of that copy's plaintext; null when the vault no longer has it. */
  readonly digest: string | null;
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  readonly sha256: string;
}

/**
 * What became of a cell. `fingerprint` is the keyed fingerprint of its rows and `digest` the
 * keyed digest of its plaintext, for the vault only (never the bucket); `prior` the current
 * copy it replaces (written, shredded) or is (reused).
 */
export type CellOutcome =
  | { readonly kind: 'written'; readonly entry: CellEntry; readonly tuple: CellTuple; readonly digest: string; readonly fingerprint: string; readonly prior: PreviousCell | undefined }
  | { readonly kind: 'reused'; readonly entry: CellEntry; readonly tuple: CellTuple; readonly fingerprint: string; readonly prior: PreviousCell }
  | { readonly kind: 'shredded'; readonly cellId: string; readonly tuple: CellTuple; readonly destroyedKey: string; readonly rows: number; readonly prior: PreviousCell | undefined };

/** The keyed fingerprint's domain, like the digest's: table and columns are bound in. */
export function fingerprintPrefix(table: string, columns: readonly string[]): Buffer {
  return Buffer.from(`lethe.fingerprint.v1\0${table}\0${columns.join(',')}\n`, 'utf8');
}

/** HMAC-SHA-256 under the digest key of a cell's or segment's row fingerprint. */
export function keyedFingerprint(digestKey: Uint8Array, prefix: Buffer, id: string, fingerprint: RowFingerprint): string {
  return createHmac('sha256', digestKey).update(prefix).update(`${id}\0${fingerprint.text()}`, 'utf8').digest('hex');
}

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
  readonly keys: Encapsulator;
  /** The backup's digest key (derived from its signing key). */
  readonly digestKey: Uint8Array;
  /** The current copies of these cells of `table` (absent ones are new). */
  readonly previous: (cellIds: readonly string[]) => Promise<ReadonlyMap<string, PreviousCell>>;
  /** Cells up to this many plaintext bytes are held until their digest is known. */
  readonly bufferBytes: number;
  /** Cells held before their keys and previous copies are looked up together (default 1,000). */
  readonly batchCells?: number;
  /** Plaintext bytes held across a batch before it is written (default 8 MiB). */
  readonly batchBytes?: number;
  readonly signal?: AbortSignal;
}

/** A small cell read whole: where its plaintext lies in the batch buffer. */
interface HeldCell {
  readonly id: string;
  /** `cellKeyId(tuple)`, computed once. */
  readonly keyId: string;
  readonly tuple: CellTuple;
  readonly start: number;
  readonly end: number;
  readonly rows: number;
  readonly fingerprint: RowFingerprint;
}

/** A held cell none of whose keys is destroyed: its keyed digest, and the previous copy it matches. */
interface LiveCell {
  readonly cell: HeldCell;
  readonly dimensionIds: readonly string[];
  readonly digest: string;
  prior: PreviousCell | undefined;
}

const BATCH_CELLS = 1000;
const BATCH_BYTES = 8 * 1024 * 1024;

/**
 * Grows by doubling; rows are copied in once (a row is a view into a COPY chunk that is
 * about to be reused) and every cell of a batch is a slice of one buffer, so a batch costs
 * a handful of allocations, not one per row.
 */
class BatchBuffer {
  #buf = Buffer.allocUnsafe(1 << 20);
  length = 0;

  append(bytes: Uint8Array): void {
    if (this.length + bytes.length > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < this.length + bytes.length) size *= 2;
      const grown = Buffer.allocUnsafe(size);
      this.#buf.copy(grown, 0, 0, this.length);
      this.#buf = grown;
    }
    this.#buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  slice(start: number, end: number): Buffer {
    return this.#buf.subarray(start, end);
  }

  reset(): void {
    this.length = 0;
  }
}

/**
 * Writes one table's cells into the pack stream, or references the previous snapshot's
 * copy of a cell whose keyed digest shows it unchanged. Small cells (up to `bufferBytes`)
 * are held in a batch; a batch's tuple keys and previous copies are then looked up with one
 * vault query each, so memory holds one batch and never grows with the store. A new cell is
 * sealed with ChaCha20-Poly1305 under its own key, derived from its tuple key and its id
 * (docs/format.md). A cell larger than the buffer ends the batch and streams straight
 * through the cipher into the pack with bounded memory, always written anew.
 *
 * Per cell: one HMAC for the digest, one for the key, one AEAD, one SHA-256 (in the pack
 * writer); per tuple, the tuple key (see Encapsulator).
 *
 * Outcomes come back in the order the cells were added.
 */
export class CellWriter {
  private held: HeldCell[] = [];
  private readonly buffer = new BatchBuffer();
  private readonly batchCells: number;
  private readonly batchBytes: number;
  private readonly prefix: Buffer;
  private readonly fpPrefix: Buffer;

  constructor(private readonly options: CellWriterOptions) {
    this.batchCells = options.batchCells ?? BATCH_CELLS;
    this.batchBytes = options.batchBytes ?? BATCH_BYTES;
    this.prefix = digestPrefix(options.table, options.columns);
    this.fpPrefix = fingerprintPrefix(options.table, options.columns);
  }

  private keyed(id: string, fingerprint: RowFingerprint): string {
    return keyedFingerprint(this.options.digestKey, this.fpPrefix, id, fingerprint);
  }

  /** Reads one cell's rows; returns the outcomes of the cells this finished (maybe none). */
  async add(cell: CellRows): Promise<CellOutcome[]> {
    const id = cellId(this.options.table, cell.tuple);
    const start = this.buffer.length;
    let rows = 0;
    const iterator = cell.rows[Symbol.asyncIterator]();
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) break;
      rows += 1;
      this.buffer.append(next.value);
      if (this.buffer.length - start > this.options.bufferBytes) {
        // Too large to hold: write what is held before it, then stream this one.
        const head = Buffer.from(this.buffer.slice(start, this.buffer.length));
        this.buffer.length = start;
        const done = await this.flush();
        done.push(await this.writeLarge(id, cell.tuple, { head, rows, iterator, fingerprint: cell.fingerprint }));
        return done;
      }
    }
    this.held.push({ id, keyId: cellKeyId(cell.tuple), tuple: cell.tuple, start, end: this.buffer.length, rows, fingerprint: cell.fingerprint });
    if (this.held.length >= this.batchCells || this.buffer.length >= this.batchBytes) return this.flush();
    return [];
  }

  /** Writes the held cells; returns their outcomes. Call once more after the last cell. */
  async flush(): Promise<CellOutcome[]> {
    const batch = this.held;
    this.held = [];
    if (batch.length === 0) {
      this.buffer.reset();
      return [];
    }
    // Public facts first: which cells a destroyed key forbids, and the digests of the others.
    const facts = await this.options.keys.facts(batch);
    const cells: ({ cell: HeldCell; destroyed: string } | LiveCell)[] = [];
    const live: LiveCell[] = [];
    for (const cell of batch) {
      const fact = facts.get(cell.keyId);
      if (fact === undefined) throw new Error(`no key facts were returned for cell ${cell.id}`);
      if ('destroyed' in fact) {
        cells.push({ cell, destroyed: fact.destroyed });
        continue;
      }
      const digest = createHmac('sha256', this.options.digestKey).update(this.prefix).update(this.buffer.slice(cell.start, cell.end)).digest('hex');
      const entry: LiveCell = { cell, dimensionIds: fact.dimensionIds, digest, prior: undefined };
      cells.push(entry);
      live.push(entry);
    }
    // Every cell's current copy: the one a changed or shredded cell supersedes, or an unchanged one is.
    const previous = await this.options.previous(batch.map((c) => c.id));
    for (const c of live) {
      const prior = previous.get(c.cell.id);
      if (prior?.digest != null && prior.key === c.cell.keyId && equalConstantTime(prior.digest, c.digest)) c.prior = prior;
    }
    // Only cells that changed need a key: an unchanged one keeps the encapsulation it was written under.
    const changed = live.filter((c) => c.prior === undefined);
    const keys =
      changed.length === 0
        ? new Map<string, LiveTupleKey>()
        : await this.options.keys.tupleKeys(changed.map(({ cell, dimensionIds }) => ({ keyId: cell.keyId, tuple: cell.tuple, dimensionIds })));
    const outcomes: CellOutcome[] = [];
    for (const c of cells) {
      const { cell } = c;
      if ('destroyed' in c) {
        outcomes.push({ kind: 'shredded', cellId: cell.id, tuple: cell.tuple, destroyedKey: c.destroyed, rows: cell.rows, prior: previous.get(cell.id) });
        continue;
      }
      const bytesPlain = cell.end - cell.start;
      const fingerprint = this.keyed(cell.id, cell.fingerprint);
      if (c.prior !== undefined) {
        outcomes.push({
          kind: 'reused',
          tuple: cell.tuple,
          fingerprint,
          prior: c.prior,
          entry: this.entry(cell.id, cell.tuple, cell.keyId, c.dimensionIds, c.prior.encapsulation, c.prior, cell.rows, bytesPlain, true),
        });
        continue;
      }
      const key = keys.get(cell.keyId);
      if (key === undefined) throw new Error(`no tuple key was returned for cell ${cell.id}`);
      const sealed = seal(cellKey(key.prk, cell.id), this.buffer.slice(cell.start, cell.end));
      const location = await this.options.packs.writeCell(sealed);
      outcomes.push({
        kind: 'written',
        tuple: cell.tuple,
        digest: c.digest,
        fingerprint,
        prior: previous.get(cell.id),
        entry: this.entry(cell.id, cell.tuple, cell.keyId, key.dimensionIds, key.encapsulation, location, cell.rows, bytesPlain, false),
      });
    }
    this.buffer.reset();
    return outcomes;
  }

  /** A cell larger than the buffer: replay what was read, then stream the rest, hashing as it passes. */
  private async writeLarge(
    id: string,
    tuple: CellTuple,
    read: { head: Buffer; rows: number; iterator: AsyncIterator<Buffer>; fingerprint: RowFingerprint },
  ): Promise<CellOutcome> {
    const key = await this.options.keys.tupleKey(tuple);
    const prior = (await this.options.previous([id])).get(id);
    const counted = { rows: read.rows, bytesPlain: read.head.length };
    const { iterator } = read;
    if ('destroyed' in key) {
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) break;
        counted.rows += 1;
      }
      return { kind: 'shredded', cellId: id, tuple, destroyedKey: key.destroyed, rows: counted.rows, prior };
    }
    const digest = createHmac('sha256', this.options.digestKey).update(this.prefix).update(read.head);
    async function* plaintext(): AsyncGenerator<Uint8Array> {
      yield read.head;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        counted.rows += 1;
        counted.bytesPlain += next.value.length;
        digest.update(next.value);
        yield next.value;
      }
    }
    const location = await this.options.packs.writeCell(sealStream(cellKey(key.prk, id), plaintext()));
    return {
      kind: 'written',
      tuple,
      digest: digest.digest('hex'),
      fingerprint: this.keyed(id, read.fingerprint),
      prior,
      entry: this.entry(id, tuple, key.keyId, key.dimensionIds, key.encapsulation, location, counted.rows, counted.bytesPlain, false),
    };
  }

  private entry(
    id: string,
    tuple: CellTuple,
    keyId: string,
    dims: readonly string[],
    encapsulation: string,
    location: { pack: string; offset: number; length: number; sha256: string },
    rows: number,
    bytesPlain: number,
    reused: boolean,
  ): CellEntry {
    return {
      id,
      table: this.options.table,
      tenant: tuple.tenant,
      key: keyId,
      dims: [...dims],
      enc: encapsulation,
      pack: location.pack,
      offset: location.offset,
      length: location.length,
      sha256: location.sha256,
      rows,
      bytesPlain,
      reused,
    };
  }
}
