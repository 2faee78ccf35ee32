import { z } from 'zod';
import { DATA_CLASSES } from '../cells/ids.ts';

/**
 * The snapshot manifest: the commit point of a snapshot, stored gzip-compressed as
 * `snapshots/<id>.json.gz`. Uncompressed it is one JSON document laid out one entry per line,
 * so that it is written and read as a stream (a store with a million cells has a manifest of
 * a million lines) and still read whole by `gzip -dc … | jq`:
 *
 * ```
 * {"format":"lethe.manifest.v3",
 * "snapshot":{...},
 * "schema":{...},
 * "cells":[
 * {...},
 * {...}
 * ],
 * "encapsulations":[
 * {...}
 * ],
 * "totals":{...},
 * "signature":{...}}
 * ```
 *
 * The cells come in the order the backup wrote them (table by table), the encapsulations
 * their keys derive from after them. The signature (Ed25519, by the backup signing key)
 * covers `lethe.manifest.v3\n<sha256 of every uncompressed byte before the signature line>\n`.
 * docs/format.md specifies every field.
 */
export const MANIFEST_FORMAT = 'lethe.manifest.v3';

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 hex digest');

export const SnapshotHeaderSchema = z.strictObject({
  id: z.string().min(1),
  createdAt: z.iso.datetime({ offset: true }),
  previous: z.strictObject({ id: z.string().min(1), sha256: hex64 }).nullable(),
  /** The chat store's consistent point: `now()` and the transaction snapshot of the read. */
  source: z.strictObject({
    databaseTime: z.string(),
    transactionSnapshot: z.string(),
    serverVersion: z.string(),
  }),
  granularity: z.enum(['month', 'week', 'day']),
  masterRecipient: z.string().startsWith('age1'),
  tables: z.array(z.strictObject({ name: z.string(), class: z.enum(DATA_CLASSES), columns: z.array(z.string()) })),
});

export const CellEntrySchema = z.strictObject({
  id: z.string().min(1),
  table: z.string().min(1),
  tenant: z.string().nullable(),
  /** The tuple's cell key id (`cell:T/class/period/author/conversation`). */
  key: z.string().min(1),
  /** The dimension keys the cell needs, in key-derivation order (period, user, conversation, tenant). */
  dims: z.array(z.string().min(1)).min(1),
  /** The encapsulation its key derives from (an earlier snapshot's, when reused). */
  enc: z.string().min(1),
  pack: z.string().min(1),
  offset: z.number().int().nonnegative(),
  length: z.number().int().positive(),
  /** sha256 of the ciphertext range: checked before anything is decrypted. */
  sha256: hex64,
  rows: z.number().int().positive(),
  bytesPlain: z.number().int().nonnegative(),
  /** True when the cell was unchanged since the previous snapshot and is referenced, not re-uploaded. */
  reused: z.boolean(),
});

export const EncapsulationEntrySchema = z.strictObject({
  id: z.string().min(1),
  tenant: z.string().nullable(),
  kem: z.literal('x25519'),
  /** `E`, the ephemeral public key, as 64 hex digits. */
  ephemeral: z.string().regex(/^[0-9a-f]{64}$/, '32 bytes of hex'),
});

export const TotalsSchema = z.strictObject({
  completedAt: z.iso.datetime({ offset: true }),
  cells: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  bytesPlain: z.number().int().nonnegative(),
  bytesStored: z.number().int().nonnegative(),
  cellsReused: z.number().int().nonnegative(),
  rowsByTable: z.record(z.string(), z.number().int().nonnegative()),
});

export const SignatureSchema = z.strictObject({
  algorithm: z.literal('ed25519'),
  keyId: z.string().min(1),
  /** sha256 hex of the uncompressed manifest bytes before the signature line: what was signed. */
  sha256: hex64,
  value: z.string().min(1),
});

export type SnapshotHeader = z.infer<typeof SnapshotHeaderSchema>;
export type CellEntry = z.infer<typeof CellEntrySchema>;
export type EncapsulationEntry = z.infer<typeof EncapsulationEntrySchema>;
export type Totals = z.infer<typeof TotalsSchema>;
export type Signature = z.infer<typeof SignatureSchema>;

/**
 * The bytes that are signed: the format as a domain tag (so a signature can never be
 * replayed elsewhere) and the sha256 of the uncompressed bytes before the signature line.
 */
export function signedMessage(bodySha256: string): Uint8Array {
  return Buffer.from(`${MANIFEST_FORMAT}\n${bodySha256}\n`, 'utf8');
}

/** Object key of a snapshot's manifest. */
export function manifestKey(snapshotId: string): string {
  return `snapshots/${snapshotId}.json.gz`;
}
