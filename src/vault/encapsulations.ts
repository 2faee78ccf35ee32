import { chunks, distinct, query, type VaultContext } from './db.ts';

/**
 * A key encapsulation: the public half `E` of an ephemeral X25519 key drawn for one
 * (snapshot, tenant), or for one (hold re-wrap run, tenant). Cells written under it derive
 * their keys from `X25519(d, E)` for each of their dimension keys `d` (docs/format.md).
 */
/** The key encapsulation mechanisms a vault may record (the table's CHECK lists the same). */
export type Kem = 'x25519' | 'x25519-mlkem768';

export interface Encapsulation {
  readonly id: string;
  readonly purpose: 'snapshot' | 'hold';
  readonly snapshotId: string | null;
  /** Null for system cells. */
  readonly tenant: string | null;
  /** `x25519-mlkem768`: also one ML-KEM-768 ciphertext per dimension key (keys.postQuantum). */
  readonly kem: Kem;
  /** Raw 32-byte X25519 public key. */
  readonly ephemeral: Uint8Array;
}

/** One dimension key's ML-KEM-768 ciphertext in a hybrid encapsulation. */
export interface EncapsulationCiphertext {
  readonly encapsulation: string;
  readonly dimensionId: string;
  /** 1088 bytes. */
  readonly ciphertext: Uint8Array;
}

interface Row {
  id: string;
  purpose: 'snapshot' | 'hold';
  snapshot_id: string | null;
  tenant: string | null;
  kem: Kem;
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

/**
 * Stores ML-KEM ciphertexts of hybrid encapsulations (public values). One already stored for
 * the same (encapsulation, dimension key) is kept: the backup derives each from its run's
 * secret deterministically, so a second insert carries the same bytes.
 */
export async function insertEncapsulationCiphertexts(ctx: VaultContext, rows: readonly EncapsulationCiphertext[]): Promise<void> {
  for (const batch of chunks(rows)) {
    await query(
      ctx.pool,
      'recording ML-KEM ciphertexts of key encapsulations',
      `INSERT INTO ${ctx.t.encapsulationCiphertexts} (encapsulation, dimension_key, ciphertext)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
       ON CONFLICT (encapsulation, dimension_key) DO NOTHING`,
      [batch.map((r) => r.encapsulation), batch.map((r) => r.dimensionId), batch.map((r) => Buffer.from(r.ciphertext))],
    );
  }
}

/**
 * The ML-KEM ciphertexts stored for these (encapsulation, dimension key) pairs, keyed by
 * `<encapsulation>\n<dimension key>`; pairs without one are absent.
 */
export async function getEncapsulationCiphertexts(
  ctx: VaultContext,
  pairs: readonly { readonly encapsulation: string; readonly dimensionId: string }[],
): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  const unique = distinct(pairs.map((p) => `${p.encapsulation}\n${p.dimensionId}`));
  for (const batch of chunks(unique)) {
    const { rows } = await query<{ encapsulation: string; dimension_key: string; ciphertext: Buffer }>(
      ctx.pool,
      'reading ML-KEM ciphertexts of key encapsulations',
      `SELECT c.encapsulation, c.dimension_key, c.ciphertext
         FROM unnest($1::text[], $2::text[]) AS w (encapsulation, dimension_key)
         JOIN ${ctx.t.encapsulationCiphertexts} c USING (encapsulation, dimension_key)`,
      [batch.map((k) => k.slice(0, k.indexOf('\n'))), batch.map((k) => k.slice(k.indexOf('\n') + 1))],
    );
    for (const r of rows) found.set(`${r.encapsulation}\n${r.dimension_key}`, new Uint8Array(r.ciphertext));
  }
  return found;
}

/** Every ML-KEM ciphertext of encapsulation `id`, by dimension key id (empty for kem x25519). */
export async function listEncapsulationCiphertexts(ctx: VaultContext, id: string): Promise<Map<string, Uint8Array>> {
  const { rows } = await query<{ dimension_key: string; ciphertext: Buffer }>(
    ctx.pool,
    'reading ML-KEM ciphertexts of a key encapsulation',
    `SELECT dimension_key, ciphertext FROM ${ctx.t.encapsulationCiphertexts} WHERE encapsulation = $1 ORDER BY dimension_key COLLATE "C"`,
    [id],
  );
  return new Map(rows.map((r) => [r.dimension_key, new Uint8Array(r.ciphertext)]));
}
