import { z } from 'zod';
import { DATA_CLASSES } from '../cells/ids.ts';

/**
 * The snapshot manifest: the commit point of a snapshot. It is one JSON document laid out
 * one entry per line, so that it can be written and read as a stream (a store with a
 * million cells has a manifest of a million lines) and still be read whole by `jq`:
 *
 * ```
 * {"format":"lethe.manifest.v1",
 * "snapshot":{...},
 * "schema":{...},
 * "keyFiles":[...],
 * "cells":[
 * {...},
 * {...}
 * ],
 * "totals":{...},
 * "signature":{...}}
 * ```
 *
 * The signature covers the SHA-256 of every byte before the signature line, as stored (the
 * raw bytes, never a decoded and re-encoded form).
 *
 * v2 dropped each cell's keyed digest of its plaintext: a digest outlives the keys that
 * open the cell, so it would let anyone with the digest key confirm a guess of shredded
 * content. Readers accept v1 (its `digest` is ignored): the AEAD of each cell and the
 * signed sha256 of its ciphertext already prove the rows are the ones backed up.
 */
export const MANIFEST_FORMAT = 'lethe.manifest.v2';

/** Every manifest format this build reads. */
export const MANIFEST_FORMATS = ['lethe.manifest.v1', MANIFEST_FORMAT] as const;
export type ManifestFormat = (typeof MANIFEST_FORMATS)[number];

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 hex digest');

export const SnapshotHeaderSchema = z.strictObject({
  id: z.string().min(1),
  createdAt: z.iso.datetime({ offset: true }),
  completedAt: z.iso.datetime({ offset: true }),
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

export const KeyFileRefSchema = z.strictObject({ key: z.string().min(1), sha256: hex64 });

export const CellEntrySchema = z.strictObject({
  id: z.string().min(1),
  table: z.string().min(1),
  tenant: z.string().nullable(),
  class: z.enum(DATA_CLASSES),
  period: z.string().min(1),
  author: z.string().nullable(),
  /** Cell key id; its AND-wrapped identity is in one of `keyFiles` (and in the vault). */
  key: z.string().min(1),
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

/** A v1 cell line: v2 plus the keyed digest, which readers ignore. */
export const CellEntryV1Schema = CellEntrySchema.extend({ digest: hex64 });

export const TotalsSchema = z.strictObject({
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
  /** sha256 hex of the manifest bytes before the signature line: what was signed. */
  sha256: hex64,
  value: z.string().min(1),
});

export type SnapshotHeader = z.infer<typeof SnapshotHeaderSchema>;
export type KeyFileRef = z.infer<typeof KeyFileRefSchema>;
export type CellEntry = z.infer<typeof CellEntrySchema>;
export type Totals = z.infer<typeof TotalsSchema>;
export type Signature = z.infer<typeof SignatureSchema>;

/**
 * The bytes that are signed: the format as a domain tag (so a signature can never be
 * replayed elsewhere) and the sha256 of the manifest's bytes before the signature line.
 */
export function signedMessage(bodySha256: string, format: ManifestFormat = MANIFEST_FORMAT): Uint8Array {
  return Buffer.from(`${format}\n${bodySha256}\n`, 'utf8');
}

/** Object key of a snapshot's manifest. */
export function manifestKey(snapshotId: string): string {
  return `snapshots/${snapshotId}.json`;
}

/** Object key of the key file written by a snapshot. */
export function keyFileKey(snapshotId: string): string {
  return `keys/${snapshotId}.ndjson`;
}
