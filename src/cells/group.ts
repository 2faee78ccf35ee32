import { copyLines, decodeCopyField, fieldEnds } from './copy-text.ts';
import type { CellTuple, DataClass } from './ids.ts';

/** Leading fields the cell query puts before a row: tenant, period, author, conversation. */
export const KEY_FIELDS = 4;

/** One cell's rows, as they stream out of the chat store. */
export interface CellRows {
  readonly tuple: CellTuple;
  /**
   * The cell's rows, each a complete COPY text line (the table's own columns only), in
   * primary-key order. Must be consumed before the next cell is requested; whatever is
   * left is skipped.
   */
  readonly rows: AsyncIterable<Buffer>;
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
  try {
    while (next.done !== true) {
      const first = next.value;
      const ends = fieldEnds(first, KEY_FIELDS);
      // Rows belong to the same cell when their four leading fields (tenant, period, author,
      // conversation) are equal byte for byte.
      const keyEnd = ends[KEY_FIELDS - 1] as number;
      const key = first.subarray(0, keyEnd);
      const tuple = tupleOf(first, ends, dataClass);
      const state = { drained: false };
      const rows = async function* (): AsyncGenerator<Buffer> {
        yield first.subarray((ends[KEY_FIELDS - 1] as number) + 1);
        for (;;) {
          next = await lines.next();
          if (next.done === true) break;
          const lineEnds = fieldEnds(next.value, KEY_FIELDS);
          if (lineEnds[KEY_FIELDS - 1] !== keyEnd || !next.value.subarray(0, keyEnd).equals(key)) break;
          yield next.value.subarray((lineEnds[KEY_FIELDS - 1] as number) + 1);
        }
        state.drained = true;
      };
      const iterator = rows();
      yield { tuple, rows: iterator };
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
