import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import {
  MANIFEST_FORMAT,
  SEGMENT_FORMAT,
  signedMessage,
  type CellEntry,
  type EncapsulationEntry,
  type SegmentEntry,
  type SegmentHeader,
  type Signature,
  type SnapshotHeader,
  type TotalsV4,
} from './format.ts';

/** Characters of manifest text gathered before one write to gzip (each write has a fixed cost). */
const CHUNK_CHARS = 256 * 1024;

/** Signs the manifest body's domain-tagged digest; returns the key id and base64 signature. */
export type ManifestSigner = (message: Uint8Array) => { keyId: string; value: string };

/**
 * One JSON document written a line at a time into gzip, hashing the uncompressed bytes as
 * they go; lines are handed to gzip in chunks of {@link CHUNK_CHARS} (each write has a fixed
 * cost). The last entry of a list is held back until the list is closed, since only it goes
 * without a trailing comma.
 */
class LineDocument {
  /** The compressed document, for ObjectStore.put. */
  readonly stream: Readable;
  readonly #lines = new PassThrough({ highWaterMark: 1 << 20 });
  readonly #hash = createHash('sha256');
  #held: string[] = [];
  #heldChars = 0;
  #pending: string | null = null;

  constructor(level: number) {
    const gzip = createGzip({ level });
    this.stream = this.#lines.pipe(gzip);
    // An error on the line stream (an abandoned backup) ends the compressed one too. The put
    // reading `stream` reports failures; once it has given up (a store it cannot write), an
    // 'error' event nobody hears would end the process with a stack.
    this.#lines.on('error', (err) => gzip.destroy(err));
    gzip.on('error', () => undefined);
  }

  emit(text: string): boolean {
    this.#held.push(text, '\n');
    this.#heldChars += text.length + 1;
    return this.#heldChars < CHUNK_CHARS || this.release();
  }

  /** Hands the held lines to gzip; false when it asks the writer to wait. */
  release(): boolean {
    if (this.#heldChars === 0) return true;
    const chunk = Buffer.from(this.#held.join(''), 'utf8');
    this.#held = [];
    this.#heldChars = 0;
    this.#hash.update(chunk);
    return this.#lines.write(chunk);
  }

  /** Appends one entry of the open list; resolves once gzip has room. */
  async entry(json: string): Promise<void> {
    const previous = this.#pending;
    this.#pending = json;
    if (previous !== null && !this.emit(`${previous},`)) await once(this.#lines, 'drain');
  }

  /** Appends one entry of the open list without waiting (for short lists). */
  entryNow(json: string): void {
    const previous = this.#pending;
    this.#pending = json;
    if (previous !== null) this.emit(`${previous},`);
  }

  /** Closes the open list with `closing` (`],` or `]}`). */
  closeList(closing: string): void {
    if (this.#pending !== null) this.emit(this.#pending);
    this.#pending = null;
    this.emit(closing);
  }

  /** The sha256 of every byte emitted so far (after releasing them). */
  digest(): string {
    this.release();
    return this.#hash.digest('hex');
  }

  end(last?: string): void {
    this.release();
    if (last === undefined) this.#lines.end();
    else this.#lines.end(Buffer.from(last, 'utf8'));
  }

  abort(reason: Error): void {
    this.#lines.destroy(reason);
  }
}

/** What the backup knows of its own run, for the totals (the rest comes from the segments). */
export interface RunTotals {
  readonly bytesStored: number;
  readonly cellsWritten: number;
  readonly segmentsWritten: number;
  readonly fullRead: boolean;
}

/**
 * Writes a v4 manifest (see format.ts): the header at once, each segment as it is listed,
 * then the encapsulations, totals and signature, computing the totals and the body's sha256
 * as it goes, so a manifest of any size is written with constant memory. {@link stream} is
 * the gzip-compressed object to store; it ends after {@link finish}.
 */
export class ManifestWriter {
  readonly #doc = new LineDocument(1);
  readonly #totals = { cells: 0, rows: 0, bytesPlain: 0, segments: 0, cellsShredded: 0 };
  // A Map, not an object: a table may be called `constructor` or `__proto__`, which an
  // object literal would answer from its prototype (a manifest no reader accepts).
  readonly #rowsByTable = new Map<string, number>();

  /** The compressed manifest, for ObjectStore.put. */
  get stream(): Readable {
    return this.#doc.stream;
  }

  constructor(header: SnapshotHeader, schema: unknown) {
    this.#doc.emit(`{"format":${JSON.stringify(MANIFEST_FORMAT)},`);
    this.#doc.emit(`"snapshot":${JSON.stringify(header)},`);
    this.#doc.emit(`"schema":${JSON.stringify(schema)},`);
    this.#doc.emit('"segments":[');
  }

  /** Appends one segment (by table, then id). */
  async segment(entry: SegmentEntry): Promise<void> {
    const t = this.#totals;
    t.segments += 1;
    t.cells += entry.cells;
    t.rows += entry.rows;
    t.bytesPlain += entry.bytesPlain;
    t.cellsShredded += entry.shredded;
    this.#rowsByTable.set(entry.table, (this.#rowsByTable.get(entry.table) ?? 0) + entry.rows);
    await this.#doc.entry(JSON.stringify(entry));
  }

  /**
   * Ends the manifest: the encapsulations the cells' keys derive from, the totals (with the
   * completion time) and the signature. Returns the totals and the signed body digest.
   */
  finish(encapsulations: Iterable<EncapsulationEntry>, run: RunTotals, completedAt: Date, sign: ManifestSigner): { totals: TotalsV4; bodySha256: string } {
    this.#doc.closeList('],');
    this.#doc.emit('"encapsulations":[');
    for (const e of encapsulations) this.#doc.entryNow(JSON.stringify(e));
    this.#doc.closeList('],');
    const t = this.#totals;
    const totals: TotalsV4 = {
      completedAt: completedAt.toISOString(),
      cells: t.cells,
      rows: t.rows,
      bytesPlain: t.bytesPlain,
      bytesStored: run.bytesStored,
      cellsReused: t.cells - run.cellsWritten,
      rowsByTable: Object.fromEntries(this.#rowsByTable),
      segments: t.segments,
      segmentsWritten: run.segmentsWritten,
      cellsShredded: t.cellsShredded,
      fullRead: run.fullRead,
    };
    this.#doc.emit(`"totals":${JSON.stringify(totals)},`);
    const bodySha256 = this.#doc.digest();
    const { keyId, value } = sign(signedMessage(bodySha256));
    const signature: Signature = { algorithm: 'ed25519', keyId, sha256: bodySha256, value };
    this.#doc.end(`"signature":${JSON.stringify(signature)}}\n`);
    return { totals, bodySha256 };
  }

  /** Abandons the manifest: the store's put fails and nothing becomes visible. */
  abort(reason: Error): void {
    this.#doc.abort(reason);
  }
}

/**
 * Writes one segment object: its header line, then its cells (by cell id, byte order). It is
 * authenticated by the sha256 of its stored bytes, which the signed manifest lists.
 */
export class SegmentWriter {
  readonly #doc = new LineDocument(6);

  get stream(): Readable {
    return this.#doc.stream;
  }

  constructor(header: SegmentHeader) {
    this.#doc.emit(`{"format":${JSON.stringify(SEGMENT_FORMAT)},`);
    this.#doc.emit(`"segment":${JSON.stringify(header)},`);
    this.#doc.emit('"cells":[');
  }

  cell(entry: CellEntry): Promise<void> {
    return this.#doc.entry(JSON.stringify(entry));
  }

  finish(): void {
    this.#doc.closeList(']}');
    this.#doc.end();
  }

  abort(reason: Error): void {
    this.#doc.abort(reason);
  }
}
