import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';

/** Rows are sent to the server in chunks of about this many bytes (one CopyData message each). */
const CHUNK_CHARS = 256 * 1024;

/** Progress callback: rows sent so far for the current table. */
export type CopyProgress = (rows: number) => void;

/**
 * Streams COPY-text rows (each ending in a newline, see copy-text.ts) into `table` with
 * `COPY table (columns) FROM STDIN`. Rows are pulled lazily from `rows` and batched, so
 * memory stays bounded however many rows there are. `table` and `columns` are trusted SQL
 * (already quoted by the caller). Returns the number of rows the server reports.
 *
 * Aborting `signal` destroys the stream, which sends CopyFail: the COPY is rolled back and
 * the call rejects. Throws whatever pg reports (the caller converts it).
 */
export async function copyRows(
  client: pg.Client,
  table: string,
  columns: readonly string[],
  rows: Iterable<string>,
  options: { signal?: AbortSignal | undefined; onProgress?: CopyProgress | undefined } = {},
): Promise<number> {
  const sink = client.query(copyFrom(`COPY ${table} (${columns.join(', ')}) FROM STDIN`));
  const source = Readable.from(chunks(rows, options.onProgress));
  if (options.signal === undefined) await pipeline(source, sink);
  else await pipeline(source, sink, { signal: options.signal });
  return sink.rowCount;
}

function* chunks(rows: Iterable<string>, onProgress: CopyProgress | undefined): Generator<string> {
  let parts: string[] = [];
  let size = 0;
  let count = 0;
  for (const row of rows) {
    parts.push(row);
    size += row.length;
    count++;
    if (size >= CHUNK_CHARS) {
      yield parts.join('');
      onProgress?.(count);
      parts = [];
      size = 0;
    }
  }
  if (parts.length > 0) yield parts.join('');
  onProgress?.(count);
}
