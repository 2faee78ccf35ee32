import { createHmac } from 'node:crypto';
import { cellKeyId, segmentId, type CellTuple } from '../cells/index.ts';
import { blobCellId, blobHeader, blobTableName, type BlobProblemKind, type BlobSource } from '../blobs/index.ts';
import { cellKey, equalConstantTime, seal, sealStream } from '../crypto/index.ts';
import { isLetheError, ErrorCode, throwIfAborted } from '../errors/index.ts';
import type { Encapsulator } from '../keys/index.ts';
import type { CellEntry } from '../manifest/index.ts';
import type { CellOutcome, PreviousCell } from './cell-writer.ts';
import type { PackWriter } from './pack-writer.ts';

/** A row with a blob column, as the backup reads it: its tuple, primary key and location. */
export interface BlobRow {
  readonly tuple: CellTuple;
  /** The primary key's values, in the mapping's primaryKey order (COPY text, never null). */
  readonly primaryKey: readonly string[];
  /** The blob column's value; null for a row without a file. */
  readonly location: string | null;
}

/**
 * A blob the backup could not take: gone from the store (`missing`), refused or broken off
 * while read (`unreadable`), or a location that would leave the store (`escapes`). It names
 * the row by its table and primary key, so the operator can find it.
 */
export type BlobFinding = {
  readonly table: string;
  /** The blob segment (`<table>.blob/<tenant>/<period>`) the file belongs in: the next backup reads it again. */
  readonly segment: string;
  readonly store: string;
  readonly primaryKey: Readonly<Record<string, string>>;
  readonly location: string;
  readonly kind: BlobProblemKind;
  readonly problem: string;
};

type Hmac = ReturnType<typeof createHmac>;

/** What became of a blob row: a cell outcome like a row cell's, a finding, or nothing (no file). */
export type BlobOutcome = CellOutcome | { readonly kind: 'finding'; readonly finding: BlobFinding } | { readonly kind: 'none' };

export interface BlobWriterOptions {
  /** The mapped table; its blobs are cells of `<table>.blob`. */
  readonly table: string;
  readonly primaryKeyColumns: readonly string[];
  /** The blob store's name in the config, for findings. */
  readonly storeName: string;
  readonly source: BlobSource;
  readonly packs: PackWriter;
  readonly keys: Encapsulator;
  readonly digestKey: Uint8Array;
  readonly previous: (cellIds: readonly string[]) => Promise<ReadonlyMap<string, PreviousCell>>;
  /** Blobs up to this size are read once into memory; larger ones are read again when they must be written. */
  readonly bufferBytes: number;
  readonly signal?: AbortSignal;
}

/** The keyed digest's domain for blobs: the companion table and the cell id are bound in. */
function blobDigest(digestKey: Uint8Array, table: string, id: string): Hmac {
  return createHmac('sha256', digestKey).update(`lethe.blob.v1\0${blobTableName(table)}\0${id}\n`, 'utf8');
}

/** Thrown inside a blob's stream when the source breaks off; becomes an `unreadable` finding. */
class BlobReadError extends Error {}

async function* guarded(body: AsyncIterable<Uint8Array>, counted: { bytes: number }, digest?: Hmac): AsyncGenerator<Uint8Array> {
  try {
    for await (const chunk of body) {
      counted.bytes += chunk.length;
      digest?.update(chunk);
      yield chunk;
    }
  } catch (err) {
    if (isLetheError(err, ErrorCode.ABORTED)) throw err;
    throw new BlobReadError(`the read broke off after ${counted.bytes} bytes: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Writes one table's blobs as cells, one at a time. Each blob is a cell of the companion
 * table `<table>.blob` under its row's tuple, so its key derives from the same tuple key
 * (and so the same dimension keys) as its row, expanded with the blob cell's own id: one
 * key seals one blob. Its plaintext is the location header and the file's bytes
 * (src/blobs/plaintext.ts).
 *
 * Unchanged blobs are referenced, not re-sealed: a blob whose keyed digest (the backup's
 * digest key over the cell id, location and bytes) equals its current copy's points at
 * that copy's pack range and encapsulation. A blob up to `bufferBytes` is read once into
 * memory; a larger one is read once to digest it when there is a copy to compare with, and
 * a second time, streaming through the cipher into the pack, only if it changed. Memory
 * stays bounded by `bufferBytes` plus the pack writer's hand-over buffer whatever a file's
 * size.
 *
 * A blob that cannot be read (gone, refused, broken off mid-read, outside the store) is a
 * finding, never an exception: the run carries on. Throws only for failures of the run
 * itself (vault, pack upload, abort).
 */
export class BlobWriter {
  constructor(private readonly options: BlobWriterOptions) {}

  /**
   * Writes a batch of rows' blobs, one after the other, with their current copies looked up
   * in one vault query; outcomes in the rows' order.
   */
  async writeAll(rows: readonly BlobRow[]): Promise<BlobOutcome[]> {
    const ids = rows.flatMap((row) => (row.location === null ? [] : [blobCellId(this.options.table, row.tuple, row.primaryKey)]));
    const previous = ids.length === 0 ? new Map<string, PreviousCell>() : await this.options.previous(ids);
    const outcomes: BlobOutcome[] = [];
    for (const row of rows) outcomes.push(await this.write(row, previous));
    return outcomes;
  }

  /** Writes one row's blob; `previous` holds its current copy when the caller looked it up already. */
  async write(row: BlobRow, previous?: ReadonlyMap<string, PreviousCell>): Promise<BlobOutcome> {
    const { options } = this;
    throwIfAborted(options.signal, 'backup');
    if (row.location === null) return { kind: 'none' };
    const location = row.location;
    const id = blobCellId(options.table, row.tuple, row.primaryKey);
    const keyId = cellKeyId(row.tuple);
    const key = await options.keys.tupleKey(row.tuple);
    const prior = (previous ?? (await options.previous([id]))).get(id);
    if ('destroyed' in key) {
      return { kind: 'shredded', cellId: id, tuple: row.tuple, destroyedKey: key.destroyed, rows: 1, prior };
    }
    const finding = (kind: BlobProblemKind, problem: string): BlobOutcome => ({
      kind: 'finding',
      finding: {
        table: options.table,
        segment: segmentId(blobTableName(options.table), row.tuple.tenant, row.tuple.period),
        store: options.storeName,
        primaryKey: Object.fromEntries(options.primaryKeyColumns.map((c, i) => [c, row.primaryKey[i] ?? ''])),
        location,
        kind,
        problem,
      },
    });
    const header = blobHeader(location);
    const signalOpt = options.signal;
    const first = await options.source.read(location, signalOpt);
    if (!first.ok) return finding(first.kind, first.problem);

    // Read up to the buffer; a blob that fits is decided and sealed from memory.
    const digest = blobDigest(options.digestKey, options.table, id).update(header);
    const counted = { bytes: 0 };
    const iterator = guarded(first.body, counted, digest)[Symbol.asyncIterator]();
    const held: Uint8Array[] = [];
    let heldBytes = 0;
    let ended = false;
    try {
      while (heldBytes <= options.bufferBytes) {
        const next = await iterator.next();
        if (next.done === true) {
          ended = true;
          break;
        }
        held.push(next.value);
        heldBytes += next.value.length;
      }
    } catch (err) {
      if (err instanceof BlobReadError) return finding('unreadable', err.message);
      throw err;
    }
    const matches = (hex: string): boolean => prior?.digest != null && prior.key === keyId && equalConstantTime(prior.digest, hex);
    const reused = (): BlobOutcome => ({
      kind: 'reused',
      tuple: row.tuple,
      fingerprint: prior?.fingerprint ?? '',
      prior: prior as PreviousCell,
      entry: this.entry(id, row.tuple, keyId, key.dimensionIds, (prior as PreviousCell).encapsulation, prior as PreviousCell, header.length + counted.bytes, true),
    });

    if (ended) {
      const hex = digest.digest('hex');
      if (matches(hex)) return reused();
      const sealed = seal(cellKey(key.prk, id), Buffer.concat([header, ...held]));
      const at = await options.packs.writeCell(sealed);
      return this.written(id, row.tuple, keyId, key, at, header.length + heldBytes, hex, prior);
    }

    if (prior?.digest != null && prior.key === keyId) {
      // Large, with a copy to compare with: finish the digest first, write only if it changed.
      try {
        for (;;) {
          const next = await iterator.next();
          if (next.done === true) break;
        }
      } catch (err) {
        if (err instanceof BlobReadError) return finding('unreadable', err.message);
        throw err;
      }
      if (matches(digest.digest('hex'))) return reused();
      held.length = 0;
      const again = await options.source.read(location, signalOpt);
      if (!again.ok) return finding(again.kind, `${again.problem} (when read again to be written)`);
      const digest2 = blobDigest(options.digestKey, options.table, id).update(header);
      const counted2 = { bytes: 0 };
      const plaintext = (async function* (): AsyncGenerator<Uint8Array> {
        yield header;
        yield* guarded(again.body, counted2, digest2);
      })();
      return this.stream(id, row.tuple, keyId, key, plaintext, () => header.length + counted2.bytes, digest2, prior, finding);
    }

    // Large and new: stream what is held, then the rest, through the cipher into the pack.
    const plaintext = (async function* (): AsyncGenerator<Uint8Array> {
      yield header;
      yield* held.splice(0);
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        yield next.value;
      }
    })();
    return this.stream(id, row.tuple, keyId, key, plaintext, () => header.length + counted.bytes, digest, prior, finding);
  }

  private async stream(
    id: string,
    tuple: CellTuple,
    keyId: string,
    key: { readonly dimensionIds: readonly string[]; readonly encapsulation: string; readonly prk: Uint8Array },
    plaintext: AsyncIterable<Uint8Array>,
    size: () => number,
    digest: Hmac,
    prior: PreviousCell | undefined,
    finding: (kind: BlobProblemKind, problem: string) => BlobOutcome,
  ): Promise<BlobOutcome> {
    let at;
    try {
      at = await this.options.packs.writeCell(sealStream(cellKey(key.prk, id), plaintext));
    } catch (err) {
      // The bytes already in the pack belong to no cell: nothing lists their range.
      if (err instanceof BlobReadError) return finding('unreadable', err.message);
      throw err;
    }
    return this.written(id, tuple, keyId, key, at, size(), digest.digest('hex'), prior);
  }

  private written(
    id: string,
    tuple: CellTuple,
    keyId: string,
    key: { readonly dimensionIds: readonly string[]; readonly encapsulation: string },
    at: { pack: string; offset: number; length: number; sha256: string },
    bytesPlain: number,
    digest: string,
    prior: PreviousCell | undefined,
  ): BlobOutcome {
    return {
      kind: 'written',
      tuple,
      digest,
      // Blob copies are compared by digest only; the fingerprint column holds the digest.
      fingerprint: digest,
      prior,
      entry: this.entry(id, tuple, keyId, key.dimensionIds, key.encapsulation, at, bytesPlain, false),
    };
  }

  private entry(
    id: string,
    tuple: CellTuple,
    keyId: string,
    dims: readonly string[],
    encapsulation: string,
    at: { pack: string; offset: number; length: number; sha256: string },
    bytesPlain: number,
    reused: boolean,
  ): CellEntry {
    return {
      id,
      table: blobTableName(this.options.table),
      tenant: tuple.tenant,
      key: keyId,
      dims: [...dims],
      enc: encapsulation,
      pack: at.pack,
      offset: at.offset,
      length: at.length,
      sha256: at.sha256,
      rows: 1,
      bytesPlain,
      reused,
    };
  }
}
