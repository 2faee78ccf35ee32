import { copyLines, decodeCopyField, fieldEnds } from './copy-text.ts';
import type { CellTuple, DataClass } from './ids.ts';

/** Leading fields the cell query puts before a row: tenant, period, author, conversation. */
export const KEY_FIELDS = 4;

/** After them, the row's hash: 32 hex digits of md5 over the row's text (src/mapping/cell-query.ts). */
const LEADING_FIELDS = KEY_FIELDS + 1;

/**
 * The fingerprint of a cell's rows as the chat store computes it (buildFingerprintQuery):
 * the row count and, for each of the two 64-bit halves of the rows' md5 hashes read as
 * signed integers, their exact sum. Order-independent, so the server aggregates it without
 * sorting. Sums are kept in Numbers (a signed high and an unsigned low 32-bit part, exact
 * for a million rows) and folded into BigInts every million rows.
 */
export class RowFingerprint {
  rows = 0;
  readonly #hi = [0, 0];
  readonly #lo = [0, 0];
  readonly #sums = [0n, 0n];
  #pending = 0;

  /** Adds one row's hash (32 hex digits). */
  add(hex: string): void {
    this.rows += 1;
    for (let i = 0; i < 2; i++) {
      // `| 0` reads the high 32 bits as signed: the half is a signed 64-bit integer.
      this.#hi[i] = (this.#hi[i] as number) + (parseInt(hex.slice(i * 16, i * 16 + 8), 16) | 0);
      this.#lo[i] = (this.#lo[i] as number) + parseInt(hex.slice(i * 16 + 8, i * 16 + 16), 16);
    }
    this.#pending += 1;
    if (this.#pending >= 1_000_000) this.#fold();
  }

  #fold(): void {
    for (let i = 0; i < 2; i++) {
      this.#sums[i] = (this.#sums[i] as bigint) + (BigInt(this.#hi[i] as number) << 32n) + BigInt(this.#lo[i] as number);
      this.#hi[i] = 0;
      this.#lo[i] = 0;
    }
    this.#pending = 0;
  }

  /** Adds the fingerprint of other rows: their count and their two sums. */
  merge(rows: number, sums: readonly bigint[]): void {
    this.#fold();
    this.rows += rows;
    for (let i = 0; i < 2; i++) this.#sums[i] = (this.#sums[i] as bigint) + (sums[i] ?? 0n);
  }

  /** The two exact sums. */
  sums(): bigint[] {
    this.#fold();
    return [...this.#sums];
  }

  /** `rows:s0:s1`, decimal: what the keyed fingerprint is computed over. */
  text(): string {
    const [s0, s1] = this.sums();
    return `${this.rows}:${String(s0)}:${String(s1)}`;
  }
}

/** One cell's rows, as they stream out of the chat store. */
export interface CellRows {
  readonly tuple: CellTuple;
  /**
   * The cell's rows, each a complete COPY text line (the table's own columns only), in
   * primary-key order. Must be consumed before the next cell is requested; whatever is
   * left is skipped.
   */
  readonly rows: AsyncIterable<Buffer>;
  /** The rows' fingerprint, complete once `rows` is drained. */
  readonly fingerprint: RowFingerprint;
}

function tupleOf(line: Buffer, ends: number[], dataClass: DataClass): CellTuple {
  const field = (i: number): string | null =>
    decodeCopyField(line.toString('utf8', i === 0 ? 0 : (ends[i - 1] as number) + 1, ends[i]));
  const period = field(1);
  if (period === null) throw new Error('cell query returned a NULL period');
  return { tenant: field(0), class: dataClass, period, author: field(2), conversation: field(3) };
}

/**
 * Groups the output of a cell query (rows sorted by tenant, period, author, conversation,
 * primary key) into cells. Rows of one cell are contiguous, so only one row is held at a time.
 */
export async function* groupCells(
  copyOutput: AsyncIterable<Uint8Array>,
  dataClass: DataClass,
): AsyncGenerator<CellRows> {
  const lines = copyLines(copyOutput)[Symbol.asyncIterator]();
  let next = await lines.next();
  /** The row after the leading fields, and its hash added to `fp`. */
  const rowOf = (line: Buffer, ends: number[], fp: RowFingerprint): Buffer => {
    const hashStart = (ends[KEY_FIELDS - 1] as number) + 1;
    const hashEnd = ends[LEADING_FIELDS - 1] as number;
    fp.add(line.toString('latin1', hashStart, hashEnd));
    return line.subarray(hashEnd + 1);
  };
  try {
    while (next.done !== true) {
      const first = next.value;
      const ends = fieldEnds(first, LEADING_FIELDS);
      // Rows belong to the same cell when their four leading fields (tenant, period, author,
      // conversation) are equal byte for byte.
      const keyEnd = ends[KEY_FIELDS - 1] as number;
      const key = first.subarray(0, keyEnd);
      const tuple = tupleOf(first, ends, dataClass);
      const state = { drained: false };
      const fingerprint = new RowFingerprint();
      const rows = async function* (): AsyncGenerator<Buffer> {
        yield rowOf(first, ends, fingerprint);
        for (;;) {
          next = await lines.next();
          if (next.done === true) break;
          const lineEnds = fieldEnds(next.value, LEADING_FIELDS);
          if (lineEnds[KEY_FIELDS - 1] !== keyEnd || !next.value.subarray(0, keyEnd).equals(key)) break;
          yield rowOf(next.value, lineEnds, fingerprint);
        }
        state.drained = true;
      };
      const iterator = rows();
      yield { tuple, rows: iterator, fingerprint };
      if (!state.drained) {
        // The consumer stopped early: skip the rest of this cell's rows.
        await iterator.return(undefined);
        for (;;) {
          next = await lines.next();
          if (next.done === true) break;
          const lineEnds = fieldEnds(next.value, KEY_FIELDS);
          if (lineEnds[KEY_FIELDS - 1] !== keyEnd || !next.value.subarray(0, keyEnd).equals(key)) break;
        }
      }
    }
  } finally {
    await lines.return(undefined);
  }
}
