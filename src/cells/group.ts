import { copyLines, decodeCopyField, fieldEnds } from './copy-text.ts';
import type { CellTuple, DataClass } from './ids.ts';

/** Leading fields the cell query puts before a row: tenant, period, author, conversation. */
export const KEY_FIELDS = 4;

/** After them, the row's hash: 32 hex digits of md5 over the row's text (src/mapping/cell-query.ts). */
const LEADING_FIELDS = KEY_FIELDS + 1;

/**
 * The fingerprint of a cell's rows as the chat store computes it (buildFingerprintQuery):
 * the row count and, for each of the four 32-bit words of the rows' hashes, their sum
 * modulo 2^32. Order-independent, so the server can aggregate it without sorting.
 */
export class RowFingerprint {
  rows = 0;
  readonly words: [number, number, number, number] = [0, 0, 0, 0];

  /** Adds one row's hash (32 hex digits). */
  add(hex: string): void {
    const w = this.words;
    this.rows += 1;
    for (let i = 0; i < 4; i++) w[i] = ((w[i] as number) + parseInt(hex.slice(i * 8, i * 8 + 8), 16)) % 4294967296;
  }

  /** Adds another fingerprint (of disjoint rows). */
  merge(other: { rows: number; words: readonly number[] }): void {
    this.rows += other.rows;
    for (let i = 0; i < 4; i++) this.words[i] = ((this.words[i] as number) + (other.words[i] as number)) % 4294967296;
  }

  /** `rows:w0:w1:w2:w3`, decimal: what the keyed fingerprint is computed over. */
  text(): string {
    return `${this.rows}:${this.words.join(':')}`;
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
