import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import { tripOnRejection, type Tripwire } from '../util/tripwire.ts';

/** Where one cell's ciphertext landed. */
export interface CellLocation {
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  /** sha256 hex of the cell's ciphertext bytes (the range `offset .. offset+length`). */
  readonly sha256: string;
}

/** A finished pack object. */
export interface PackInfo {
  readonly key: string;
  readonly size: number;
  readonly sha256: string;
  readonly cells: number;
}

interface OpenPack {
  readonly key: string;
  readonly stream: PassThrough;
  readonly upload: Promise<{ size: number; sha256: string }>;
  /** Rejects when the upload fails, so a writer blocked on backpressure wakes up. */
  readonly failed: Tripwire;
  bytes: number;
  cells: number;
  /** Ciphertext not yet handed to the upload stream: small cells go in as one write. */
  pending: Uint8Array[];
  pendingBytes: number;
}

/**
 * Bytes gathered before one write to the upload stream. A chat store's cells are about a
 * kilobyte; one stream write each costs more than sealing them.
 */
const WRITE_BYTES = 256 * 1024;

/** `packs/<aa>/<32 hex>`: the two-character fan-out keeps listings and directories small. */
export function newPackKey(): string {
  const id = randomBytes(16).toString('hex');
  return `packs/${id.slice(0, 2)}/${id}`;
}

/**
 * Concatenates cell ciphertexts (each a sealed cell, docs/format.md) into pack objects of about
 * `targetBytes`, streaming each pack to the store as it is written. A pack closes at the
 * first cell boundary past the target, so a cell never spans two packs.
 *
 * Nothing here is visible as complete until the store finishes a put; a crash leaves at
 * most an incomplete upload, which the next backup's cleanup removes.
 */
export class PackWriter {
  private current: OpenPack | undefined;
  private readonly finished: PackInfo[] = [];

  constructor(
    private readonly store: ObjectStore,
    private readonly options: {
      targetBytes: number;
      lock?: ObjectLock;
      signal?: AbortSignal;
      /** Called with a new pack's key before its upload starts (the vault records it). */
      beforeUpload?: (key: string) => Promise<void>;
    },
  ) {}

  /** Packs finished so far. */
  get packs(): readonly PackInfo[] {
    return this.finished;
  }

  /**
   * Appends one cell. Resolves once its bytes are handed to the upload (not yet durable:
   * durability comes with {@link close}). Throws STORAGE if the pack's upload failed.
   */
  async writeCell(body: Uint8Array | AsyncIterable<Uint8Array>): Promise<CellLocation> {
    throwIfAborted(this.options.signal, 'writing a pack');
    const pack = this.current ?? (await this.open());
    const offset = pack.bytes;
    const hash = createHash('sha256');
    const chunks = body instanceof Uint8Array ? [body] : body;
    for await (const chunk of chunks) {
      hash.update(chunk);
      pack.bytes += chunk.length;
      pack.pending.push(chunk);
      pack.pendingBytes += chunk.length;
      if (pack.pendingBytes >= WRITE_BYTES) await this.handOver(pack);
    }
    pack.cells += 1;
    const location: CellLocation = {
      pack: pack.key,
      offset,
      length: pack.bytes - offset,
      sha256: hash.digest('hex'),
    };
    if (pack.bytes >= this.options.targetBytes) await this.finishCurrent();
    return location;
  }

  /** Finishes the open pack and waits for every upload; returns all packs written. */
  async close(): Promise<readonly PackInfo[]> {
    await this.finishCurrent();
    return this.finished;
  }

  /** Abandons the open pack: its upload is aborted and nothing becomes visible. */
  async abort(): Promise<void> {
    const pack = this.current;
    this.current = undefined;
    if (pack === undefined) return;
    pack.stream.destroy(new LetheError(ErrorCode.ABORTED, 'backup abandoned'));
    await pack.upload.catch(() => undefined);
  }

  /** Writes the gathered ciphertext to the upload, waiting while the upload is behind. */
  private async handOver(pack: OpenPack): Promise<void> {
    if (pack.pendingBytes === 0) return;
    const bytes = pack.pending.length === 1 ? (pack.pending[0] as Uint8Array) : Buffer.concat(pack.pending, pack.pendingBytes);
    pack.pending = [];
    pack.pendingBytes = 0;
    if (!pack.stream.write(bytes)) await pack.failed.wait(once(pack.stream, 'drain'));
  }

  private async open(): Promise<OpenPack> {
    const key = newPackKey();
    await this.options.beforeUpload?.(key);
    const stream = new PassThrough({ highWaterMark: 1 << 20 });
    // A failure reaches us through `upload`; once the put has given up reading (a store it
    // cannot write), abort()'s destroy would otherwise be an 'error' event nobody hears,
    // which ends the process with a stack.
    stream.on('error', () => undefined);
    const upload = this.store.put(key, stream, {
      ...(this.options.lock === undefined ? {} : { lock: this.options.lock }),
      ...(this.options.signal === undefined ? {} : { signal: this.options.signal }),
    });
    // A failed upload interrupts a wait for drain, which would otherwise never come.
    const failed = tripOnRejection(upload);
    const pack: OpenPack = { key, stream, upload, failed, bytes: 0, cells: 0, pending: [], pendingBytes: 0 };
    this.current = pack;
    return pack;
  }

  private async finishCurrent(): Promise<void> {
    const pack = this.current;
    if (pack === undefined) return;
    this.current = undefined;
    await this.handOver(pack);
    pack.stream.end();
    const { size, sha256 } = await pack.upload;
    if (size !== pack.bytes) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `pack ${pack.key}: the store reports ${size} bytes written, lethe sent ${pack.bytes}`,
      );
    }
    this.finished.push({ key: pack.key, size, sha256, cells: pack.cells });
  }
}
