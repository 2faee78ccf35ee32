import { chunks, distinct, query, type VaultContext } from './db.ts';

/**
 * A key encapsulation: the public half `E` of an ephemeral X25519 key drawn for one
 * (snapshot, tenant), or for one (hold re-wrap run, tenant). Cells written under it derive
 * their keys from `X25519(d, E)` for each of their dimension keys `d` (docs/format.md).
 */
export interface Encapsulation {
  readonly id: string;
  readonly purpose: 'snapshot' | 'hold';
  readonly snapshotId: string | null;
  /** Null for system cells. */
  readonly tenant: string | null;
  readonly kem: 'x25519';
  /** Raw 32-byte X25519 public key. */
  readonly ephemeral: Uint8Array;
}

interface Row {
  id: string;
  purpose: 'snapshot' | 'hold';
  snapshot_id: string | null;
  tenant: string | null;
  kem: 'x25519';
  ephemeral: Buffer;
}

/** Stores encapsulations (public values only). An id already stored is an error (DATABASE). */
export async function insertEncapsulations(ctx: VaultContext, encapsulations: readonly Encapsulation[]): Promise<void> {
  for (const batch of chunks(encapsulations)) {
    await query(
      ctx.pool,
      'recording key encapsulations',
      `INSERT INTO ${ctx.t.encapsulations} (id, purpose, snapshot_id, tenant, kem, ephemeral)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])`,
      [
        batch.map((e) => e.id),
        batch.map((e) => e.purpose),
        batch.map((e) => e.snapshotId),
        batch.map((e) => e.tenant),
        batch.map((e) => e.kem),
        batch.map((e) => Buffer.from(e.ephemeral)),
      ],
    );
  }
}

/** Each of `ids` that exists, by id. */
export async function getEncapsulations(ctx: VaultContext, ids: readonly string[]): Promise<Map<string, Encapsulation>> {
  const found = new Map<string, Encapsulation>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<Row>(
      ctx.pool,
      'reading key encapsulations',
      `SELECT id, purpose, snapshot_id, tenant, kem, ephemeral FROM ${ctx.t.encapsulations} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const r of rows) {
      found.set(r.id, { id: r.id, purpose: r.purpose, snapshotId: r.snapshot_id, tenant: r.tenant, kem: r.kem, ephemeral: new Uint8Array(r.ephemeral) });
    }
  }
  return found;
}
