import { createHash } from 'node:crypto';
import {
  MANIFEST_FORMAT,
  signedMessage,
  type CellEntry,
  type KeyFileRef,
  type Signature,
  type SnapshotHeader,
  type Totals,
} from './format.ts';

/** Signs the manifest body's domain-tagged digest; returns the key id and base64 signature. */
export type ManifestSigner = (message: Uint8Array) => { keyId: string; value: string };

export interface ManifestInput {
  readonly header: SnapshotHeader;
  readonly schema: unknown;
  readonly keyFiles: readonly KeyFileRef[];
  /** Cells in restore order (table order, then cell id). */
  readonly cells: AsyncIterable<CellEntry>;
  readonly sign: ManifestSigner;
}

/**
 * Serialises a manifest line by line (see format.ts), computing totals and the signature
 * as it goes, so a manifest of any size is written with constant memory. The caller pipes
 * the lines to the store.
 */
export async function* manifestLines(input: ManifestInput): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  const emit = (text: string): Buffer => {
    const line = Buffer.from(`${text}\n`, 'utf8');
    hash.update(line);
    return line;
  };
  yield emit(`{"format":${JSON.stringify(MANIFEST_FORMAT)},`);
  yield emit(`"snapshot":${JSON.stringify(input.header)},`);
  yield emit(`"schema":${JSON.stringify(input.schema)},`);
  yield emit(`"keyFiles":${JSON.stringify(input.keyFiles)},`);
  yield emit('"cells":[');
  const totals: Totals = { cells: 0, rows: 0, bytesPlain: 0, bytesStored: 0, cellsReused: 0, rowsByTable: {} };
  let pending: CellEntry | undefined;
  for await (const cell of input.cells) {
    if (pending !== undefined) yield emit(`${JSON.stringify(pending)},`);
    pending = cell;
    totals.cells += 1;
    totals.rows += cell.rows;
    totals.bytesPlain += cell.bytesPlain;
    if (cell.reused) totals.cellsReused += 1;
    else totals.bytesStored += cell.length;
    totals.rowsByTable[cell.table] = (totals.rowsByTable[cell.table] ?? 0) + cell.rows;
  }
  if (pending !== undefined) yield emit(JSON.stringify(pending));
  yield emit('],');
  yield emit(`"totals":${JSON.stringify(totals)},`);
  const bodySha256 = hash.digest('hex');
  const { keyId, value } = input.sign(signedMessage(bodySha256));
  const signature: Signature = { algorithm: 'ed25519', keyId, sha256: bodySha256, value };
  yield Buffer.from(`"signature":${JSON.stringify(signature)}}\n`, 'utf8');
}
