import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import {
  MANIFEST_FORMAT,
  signedMessage,
  type CellEntry,
  type EncapsulationEntry,
  type Signature,
  type SnapshotHeader,
  type Totals,
} from './format.ts';

/** Characters of manifest text gathered before one write to gzip (each write has a fixed cost). */
const CHUNK_CHARS = 256 * 1024;

/** Signs the manifest body's domain-tagged digest; returns the key id and base64 signature. */
export type ManifestSigner = (message: Uint8Array) => { keyId: string; value: string };

/**
 * Writes a manifest (see format.ts) as the backup goes: the header at once, each cell as it
 * is written, then the encapsulations, totals and signature, computing the totals and the
 * body's sha256 as it goes, so a manifest of any size is written with constant memory.
 * {@link stream} is the gzip-compressed object to store; it ends after {@link finish}.
 * Backpressure is honoured: {@link cell} resolves once its line is accepted.
 */
export class ManifestWriter {
  /** The compressed manifest, for ObjectStore.put. */
  readonly stream: Readable;
  readonly #lines = new PassThrough({ highWaterMark: 1 << 20 });
  readonly #hash = createHash('sha256');
  #pending: string | null = null;
  readonly #totals: Omit<Totals, 'completedAt'> = { cells: 0, rows: 0, bytesPlain: 0, bytesStored: 0, cellsReused: 0, rowsByTable: {} };

  constructor(header: SnapshotHeader, schema: unknown) {
    // Level 1: the manifest's redundancy (ids, field names) goes at a fraction of level 6's time.
    const gzip = createGzip({ level: 1 });
    this.stream = this.#lines.pipe(gzip);
    // An error on the line stream (an abandoned backup) ends the compressed one too.
    this.#lines.on('error', (err) => gzip.destroy(err));
    this.#emit(`{"format":${JSON.stringify(MANIFEST_FORMAT)},`);
    this.#emit(`"snapshot":${JSON.stringify(header)},`);
    this.#emit(`"schema":${JSON.stringify(schema)},`);
    this.#emit('"cells":[');
  }

  /** Lines not yet compressed: gzip is fed in chunks of {@link CHUNK_CHARS}, not line by line. */
  #held: string[] = [];
  #heldChars = 0;

  #emit(text: string): boolean {
    this.#held.push(text, '\n');
    this.#heldChars += text.length + 1;
    return this.#heldChars < CHUNK_CHARS || this.#release();
  }

  /** Hands the held lines to gzip; false when it asks the writer to wait. */
  #release(): boolean {
    if (this.#heldChars === 0) return true;
    const chunk = Buffer.from(this.#held.join(''), 'utf8');
    this.#held = [];
    this.#heldChars = 0;
    this.#hash.update(chunk);
    return this.#lines.write(chunk);
  }

  /** Appends one cell (in the order cells are to be restored). */
  async cell(entry: CellEntry): Promise<void> {
    const t = this.#totals;
    t.cells += 1;
    t.rows += entry.rows;
    t.bytesPlain += entry.bytesPlain;
    if (entry.reused) t.cellsReused += 1;
    else t.bytesStored += entry.length;
    t.rowsByTable[entry.table] = (t.rowsByTable[entry.table] ?? 0) + entry.rows;
    const previous = this.#pending;
    this.#pending = JSON.stringify(entry);
    if (previous !== null && !this.#emit(`${previous},`)) await once(this.#lines, 'drain');
  }

  /**
   * Ends the manifest: the encapsulations the cells' keys derive from, the totals (with the
   * completion time) and the signature. Returns the totals and the signed body digest.
   */
  finish(encapsulations: Iterable<EncapsulationEntry>, completedAt: Date, sign: ManifestSigner): { totals: Totals; bodySha256: string } {
    if (this.#pending !== null) this.#emit(this.#pending);
    this.#emit('],');
    this.#emit('"encapsulations":[');
    let first = true;
    let last: string | null = null;
    for (const e of encapsulations) {
      if (last !== null) this.#emit(`${last},`);
      last = JSON.stringify(e);
      first = false;
    }
    if (!first && last !== null) this.#emit(last);
    this.#emit('],');
    const totals: Totals = { completedAt: completedAt.toISOString(), ...this.#totals };
    this.#emit(`"totals":${JSON.stringify(totals)},`);
    this.#release();
    const bodySha256 = this.#hash.digest('hex');
    const { keyId, value } = sign(signedMessage(bodySha256));
    const signature: Signature = { algorithm: 'ed25519', keyId, sha256: bodySha256, value };
    this.#lines.end(Buffer.from(`"signature":${JSON.stringify(signature)}}\n`, 'utf8'));
    return { totals, bodySha256 };
  }

  /** Abandons the manifest: the store's put fails and nothing becomes visible. */
  abort(reason: Error): void {
    this.#lines.destroy(reason);
  }
}
