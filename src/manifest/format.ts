import { z } from 'zod';
import { DATA_CLASSES } from '../cells/ids.ts';
import type { SnapshotCell } from '../vault/index.ts';

/**
 * The snapshot manifest: the commit point of a snapshot, stored gzip-compressed as
 * `snapshots/<id>.json.gz`. A snapshot is a tree: the manifest names segments (one per table,
 * tenant and period) by object key and sha256, and each segment object lists its cells, so a
 * new snapshot references the unchanged segments of the one before it instead of rewriting
 * them. Both are one JSON document laid out one entry per line, streamed, and read whole by
 * `gzip -dc … | jq`:
 *
 * ```
 * {"format":"lethe.manifest.v4",          {"format":"lethe.segment.v1",
 * "snapshot":{...},                        "segment":{...},
 * "schema":{...},                          "cells":[
 * "segments":[                             {...cell...},
 * {...segment...},                         {...cell...}
 * {...segment...}                          ]}
 * ],
 * "encapsulations":[
 * {...}
 * ],
 * "totals":{...},
 * "signature":{...}}
 * ```
 *
 * Segments come by table, then id (byte order); the encapsulations every listed cell's key
 * derives from after them. The signature (Ed25519, by the backup signing key) covers
 * `lethe.manifest.v4\n<sha256 of every uncompressed byte before the signature line>\n`; the
 * segments are authenticated by their sha256 in the signed manifest. v3 manifests (cells
 * inline, no segments) are still read. docs/format.md specifies every field.
 */
export const MANIFEST_FORMAT = 'lethe.manifest.v4';

/** The previous format: cells listed in the manifest itself. Still read, never written. */
export const MANIFEST_FORMAT_V3 = 'lethe.manifest.v3';

/** A segment object's format (docs/format.md). */
export const SEGMENT_FORMAT = 'lethe.segment.v1';

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
  /** The vault's first master recipient: `age1…` (file provider) or `lethe-p256:…` (an HSM's P-256 key). */
  masterRecipient: z.string().refine((r) => r.startsWith('age1') || r.startsWith('lethe-p256:'), 'an age1… or lethe-p256:… recipient'),
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

/**
 * One segment of a v4 manifest: the cells of one table, tenant and period, listed in the
 * segment object `key`, whose stored (compressed) bytes hash to `sha256`.
 */
export const SegmentEntrySchema = z.strictObject({
  /** `<table>/<tenant>/<period>`, the first three components of its cells' ids. */
  id: z.string().min(1),
  table: z.string().min(1),
  tenant: z.string().nullable(),
  period: z.string().min(1),
  key: z.string().regex(/^segments\/[0-9a-f]{2}\/[0-9a-f]{32}\.json\.gz$/, 'a segment object key'),
  sha256: hex64,
  size: z.number().int().positive(),
  cells: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  bytesPlain: z.number().int().nonnegative(),
  /** Cells of its rows not backed up because a key they need was destroyed. */
  shredded: z.number().int().nonnegative(),
  /** The snapshot that wrote the segment object (an earlier one when it is referenced, not rewritten). */
  snapshot: z.string().min(1),
});

/** The header line of a segment object. */
export const SegmentHeaderSchema = z.strictObject({
  id: z.string().min(1),
  table: z.string().min(1),
  tenant: z.string().nullable(),
  period: z.string().min(1),
  snapshot: z.string().min(1),
});

/** base64 of a 1088-byte ML-KEM-768 ciphertext: 1452 characters, one `=` of padding. */
const MLKEM_CIPHERTEXT_BASE64 = /^[A-Za-z0-9+/]{1451}=$/;

export const EncapsulationEntrySchema = z.discriminatedUnion('kem', [
  z.strictObject({
    id: z.string().min(1),
    tenant: z.string().nullable(),
    kem: z.literal('x25519'),
    /** `E`, the ephemeral public key, as 64 hex digits. */
    ephemeral: z.string().regex(/^[0-9a-f]{64}$/, '32 bytes of hex'),
  }),
  // keys.postQuantum (docs/format.md): E, and per dimension key its ML-KEM-768 ciphertext.
  z.strictObject({
    id: z.string().min(1),
    tenant: z.string().nullable(),
    kem: z.literal('x25519-mlkem768'),
    ephemeral: z.string().regex(/^[0-9a-f]{64}$/, '32 bytes of hex'),
    /** By dimension key id (byte order): base64 of the 1088-byte ML-KEM-768 ciphertext `C_D`. */
    ciphertexts: z.record(z.string().min(1), z.string().regex(MLKEM_CIPHERTEXT_BASE64, 'base64 of 1088 bytes')),
  }),
]);

export const TotalsSchema = z.strictObject({
  completedAt: z.iso.datetime({ offset: true }),
  cells: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  bytesPlain: z.number().int().nonnegative(),
  bytesStored: z.number().int().nonnegative(),
  cellsReused: z.number().int().nonnegative(),
  rowsByTable: z.record(z.string(), z.number().int().nonnegative()),
});

/** Totals of a v4 manifest: those of v3 and the tree's. */
export const TotalsV4Schema = TotalsSchema.extend({
  segments: z.number().int().nonnegative(),
  /** Segment objects this snapshot wrote (the others are referenced from earlier snapshots). */
  segmentsWritten: z.number().int().nonnegative(),
  cellsShredded: z.number().int().nonnegative(),
  /** True when the backup read every row (backup.fullEvery), false when only changed segments. */
  fullRead: z.boolean(),
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
export type TotalsV4 = z.infer<typeof TotalsV4Schema>;
export type SegmentEntry = z.infer<typeof SegmentEntrySchema>;
export type SegmentHeader = z.infer<typeof SegmentHeaderSchema>;
export type Signature = z.infer<typeof SignatureSchema>;

/** A cell as the vault records it: what a manifest entry is made from. */
export type RecordedCell = Pick<
  SnapshotCell,
  'id' | 'table' | 'tenant' | 'key' | 'encapsulation' | 'pack' | 'offset' | 'length' | 'sha256' | 'rows' | 'bytesPlain' | 'reused'
>;

/** The manifest entry of a recorded cell, given its tuple's dimension keys in derivation order. */
export function cellEntryOf(cell: RecordedCell, dims: readonly string[]): CellEntry {
  return {
    id: cell.id,
    table: cell.table,
    tenant: cell.tenant,
    key: cell.key,
    dims: [...dims],
    enc: cell.encapsulation,
    pack: cell.pack,
    offset: cell.offset,
    length: cell.length,
    sha256: cell.sha256,
    rows: cell.rows,
    bytesPlain: cell.bytesPlain,
    reused: cell.reused,
  };
}

/**
 * The bytes that are signed: the format as a domain tag (so a signature can never be
 * replayed elsewhere) and the sha256 of the uncompressed bytes before the signature line.
 */
export function signedMessage(bodySha256: string, format: string = MANIFEST_FORMAT): Uint8Array {
  return Buffer.from(`${format}\n${bodySha256}\n`, 'utf8');
}

/** Object key of a new segment object: random, under a two-hex-digit fan-out like packs. */
export function newSegmentKey(random: Buffer): string {
  const hex = random.toString('hex');
  if (hex.length !== 32) throw new Error('a segment key needs 16 random bytes');
  return `segments/${hex.slice(0, 2)}/${hex}.json.gz`;
}

/** Object key of a snapshot's manifest. */
export function manifestKey(snapshotId: string): string {
  return `snapshots/${snapshotId}.json.gz`;
}
