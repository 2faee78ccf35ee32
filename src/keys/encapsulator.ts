import { createHmac, randomBytes, type KeyObject } from 'node:crypto';
import { cellKeyId, dimensionKeyIds, dimensionKind, type CellTuple } from '../cells/ids.ts';
import {
  decodeRecipient,
  encodeDimensionSecret,
  encodeRecipient,
  generateRawKeyPair,
  hybridTupleKey,
  mlkemEncapsulate,
  mlkemKeyPair,
  newMlKemSeed,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  type HybridSecret,
} from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { BoundedMap } from '../util/bounded-map.ts';
import type { CellKey, EncapsulationCiphertext, Vault } from '../vault/index.ts';
import { currentWrapTarget, wrapDimensionSecret, type MasterWrapTarget } from './master.ts';

/** What the backup needs to write a tuple's cells. */
export interface LiveTupleKey {
  readonly keyId: string;
  readonly dimensionIds: readonly string[];
  readonly encapsulation: string;
  /** The tuple key (HKDF-Extract output); secret, never stored. */
  readonly prk: Buffer;
}

/** A tuple's key, or the destroyed dimension key that forbids writing its cells. */
export type TupleKey = LiveTupleKey | { readonly keyId: string; readonly destroyed: string };

/** A tuple with its cell key id, computed once by the caller (`cellKeyId(tuple)`). */
export interface KeyedTuple {
  readonly keyId: string;
  readonly tuple: CellTuple;
}

/** A tuple's dimension key ids, or the destroyed one among them. */
export type TupleFacts = { readonly dimensionIds: string[] } | { readonly destroyed: string };

/** A test hook: sees every secret the backup makes (ephemeral keys, shared secrets, tuple keys). */
export type SecretObserver = (kind: 'ephemeral' | 'shared' | 'tuple', secret: Uint8Array) => void;

/** One (snapshot, tenant) encapsulation of this run: the ephemeral private key lives here only. */
interface RunEncapsulation {
  readonly id: string;
  readonly tenant: string | null;
  readonly privateKey: KeyObject;
  readonly ephemeral: Uint8Array;
  /**
   * keys.postQuantum: the secret each dimension key's ML-KEM encapsulation randomness is
   * derived from (see {@link mlkemRandomness}), so one evicted from the cache is computed
   * again to the same ciphertext. Null for kem x25519.
   */
  readonly mlkemSecret: Buffer | null;
}

interface DimensionFacts {
  readonly publicKey: Uint8Array;
  readonly destroyed: boolean;
}

/** The ML-KEM encapsulation randomness `m` for one dimension key of a run's encapsulation. */
function mlkemRandomness(secret: Buffer, dimensionId: string): Uint8Array {
  return createHmac('sha256', secret).update(`lethe.mlkem-encaps.v1\n${dimensionId}`, 'utf8').digest();
}

/**
 * Entries kept per cache generation (see BoundedMap). Tenant and current period keys recur
 * in every batch; users and conversations come and go. What is dropped is recomputed (or
 * asked for again) when it recurs, so memory does not grow with the store.
 */
const CACHE_ENTRIES = 20_000;
const MLKEM_CACHE_ENTRIES = 5_000;

/** The id of the encapsulation of snapshot `snapshotId` for `tenant` (`-` for system cells). */
export function encapsulationId(snapshotId: string, tenant: string | null): string {
  return `${snapshotId}/${tenant === null ? '-' : encodeURIComponent(tenant).replaceAll('-', '%2D')}`;
}

/**
 * The backup's keys, made from public material only: one encapsulation (an ephemeral X25519
 * key) per tenant that this snapshot writes cells of, recorded in the vault (public half)
 * the first time the tenant is met; the shared secret with each dimension key its cells
 * use, computed once; the tuple key of each tuple. Missing dimension keys are created: a
 * fresh X25519 key, its private half as PKCS#8 PEM wrapped to the current master epoch's
 * public recipient (master.ts) and stored with that epoch, then dropped. No identity is ever read: nothing here can open a
 * cell of an earlier snapshot, and this run's own secrets live in memory only.
 *
 * Must run under the backup job lock. {@link forget} drops every secret when the run ends.
 */
export class Encapsulator {
  #encapsulations = new Map<string, RunEncapsulation>();
  /** This run's encapsulation per tenant (`null` for system cells). */
  #byTenant = new Map<string | null, RunEncapsulation>();
  readonly #dimensions = new BoundedMap<string, DimensionFacts>(CACHE_ENTRIES);
  readonly #shared = new BoundedMap<string, Buffer>(CACHE_ENTRIES);
  /**
   * keys.postQuantum: `K_D` and `C_D` per (encapsulation, dimension key), beside `#shared`'s
   * `Z_D`, and ML-KEM public keys by dimension id. Fewer entries than the other caches: each
   * holds 1–1.2 KB, so these stay near 25 MB together; what they drop is computed again to
   * the same bytes (see {@link mlkemRandomness}) or read again.
   */
  readonly #mlkem = new BoundedMap<string, { k: Uint8Array; ciphertext: Uint8Array }>(MLKEM_CACHE_ENTRIES);
  readonly #mlkemPublic = new BoundedMap<string, Uint8Array>(MLKEM_CACHE_ENTRIES);
  /** Ciphertexts not yet stored; stored before the tuple keys that use them are handed out. */
  #pendingCiphertexts: EncapsulationCiphertext[] = [];
  readonly #tuples = new BoundedMap<string, LiveTupleKey>(CACHE_ENTRIES);
  /** Tuple facts not yet handed to the vault (see {@link takeTupleFacts}). */
  #unrecorded: CellKey[] = [];
  /** Dimension keys created by this run. */
  dimensionKeysCreated = 0;
  #wrapTarget: MasterWrapTarget | undefined;

  constructor(
    private readonly vault: Vault,
    private readonly masterRecipient: string,
    private readonly snapshotId: string,
    private readonly observe?: SecretObserver,
    /** keys.postQuantum: new keys get an ML-KEM-768 half, new encapsulations are x25519-mlkem768. */
    private readonly postQuantum = false,
  ) {}

  /** The encapsulations this run created, for the manifest (public halves). */
  created(): { id: string; tenant: string | null; ephemeral: Uint8Array }[] {
    return [...this.#encapsulations.values()].map((e) => ({ id: e.id, tenant: e.tenant, ephemeral: e.ephemeral }));
  }

  /**
   * For each tuple, by cell key id: its dimension key ids, or the destroyed dimension key
   * that forbids writing it. Public facts only (no encapsulation is made): what the backup
   * needs before it knows which cells changed.
   */
  async facts(tuples: readonly KeyedTuple[]): Promise<Map<string, TupleFacts>> {
    const out = new Map<string, TupleFacts>();
    const wanted = new Map<string, string[]>();
    for (const { keyId, tuple } of tuples) {
      if (!wanted.has(keyId)) wanted.set(keyId, dimensionKeyIds(tuple));
    }
    const dimensions = await this.#loadDimensions([...wanted.values()].flat());
    for (const [keyId, dimensionIds] of wanted) {
      const destroyed = dimensionIds.find((id) => dimensions.get(id)?.destroyed === true);
      out.set(keyId, destroyed === undefined ? { dimensionIds } : { destroyed });
    }
    return out;
  }

  /**
   * The tuple key of each tuple, by cell key id, for tuples whose {@link facts} named no
   * destroyed key (`dimensionIds` are those facts): missing dimension keys and encapsulations
   * are created in the vault first; the tuples' facts wait for {@link takeTupleFacts}.
   */
  async tupleKeys(tuples: readonly (KeyedTuple & { readonly dimensionIds: readonly string[] })[]): Promise<Map<string, LiveTupleKey>> {
    const results = new Map<string, LiveTupleKey>();
    const live = new Map<string, { tuple: CellTuple; dimensionIds: readonly string[] }>();
    for (const { keyId, tuple, dimensionIds } of tuples) {
      const known = this.#tuples.get(keyId);
      if (known !== undefined) results.set(keyId, known);
      else if (!live.has(keyId)) live.set(keyId, { tuple, dimensionIds });
    }
    if (live.size === 0) return results;
    for (const [keyId, { tuple, dimensionIds }] of live) {
      this.#unrecorded.push({
        id: keyId,
        tenant: tuple.tenant,
        class: tuple.class,
        period: tuple.period,
        author: tuple.author,
        conversation: tuple.conversation,
        dimensionIds: [...dimensionIds],
      });
    }
    await this.#createMissing([...live.values()].flatMap(({ tuple, dimensionIds }) => dimensionIds.map((id) => ({ id, tenant: tuple.tenant }))));
    if (this.postQuantum) {
      // One query for the batch's ML-KEM public keys, not one per key.
      const unknown = [...new Set([...live.values()].flatMap(({ dimensionIds }) => dimensionIds))].filter((id) => !this.#mlkemPublic.has(id));
      if (unknown.length > 0) for (const [id, key] of await this.vault.getMlkemPublicKeys(unknown)) this.#mlkemPublic.set(id, key);
    }
    for (const [keyId, { tuple, dimensionIds }] of live) {
      // Synchronous when cached (nearly always): an await per dimension key per tuple costs more than the HMAC.
      const encapsulation = this.#byTenant.get(tuple.tenant) ?? (await this.#encapsulation(tuple.tenant));
      const secrets: Buffer[] = [];
      for (const id of dimensionIds) secrets.push(this.#shared.get(`${encapsulation.id}\n${id}`) ?? (await this.#secret(encapsulation, id, tuple.tenant)));
      let prk: Buffer;
      if (encapsulation.mlkemSecret === null) prk = tupleKey(secrets, encapsulation.ephemeral, dimensionIds);
      else {
        const parts: HybridSecret[] = [];
        for (const [i, id] of dimensionIds.entries()) {
          const m = this.#mlkem.get(`${encapsulation.id}\n${id}`) ?? (await this.#mlkemPart(encapsulation, id));
          parts.push({ z: secrets[i] as Buffer, k: m.k, ciphertext: m.ciphertext });
        }
        prk = hybridTupleKey(parts, encapsulation.ephemeral, dimensionIds);
      }
      this.observe?.('tuple', prk);
      const key = { keyId, dimensionIds, encapsulation: encapsulation.id, prk };
      results.set(keyId, key);
      this.#tuples.set(keyId, key);
    }
    if (this.#pendingCiphertexts.length > 0) {
      const rows = this.#pendingCiphertexts;
      this.#pendingCiphertexts = [];
      await this.vault.insertEncapsulationCiphertexts(rows);
    }
    return results;
  }

  /**
   * The facts of the tuples this run gave keys to since the last call, for the vault. They
   * must be recorded (Vault.addSnapshotCells) with or before the first cell that names them;
   * the backup records them in the same transaction as the batch's cells.
   */
  takeTupleFacts(): CellKey[] {
    const facts = this.#unrecorded;
    this.#unrecorded = [];
    return facts;
  }

  /** The tuple key of one tuple, or the destroyed dimension key that forbids it (see {@link facts}). */
  async tupleKey(tuple: CellTuple): Promise<TupleKey> {
    const keyId = cellKeyId(tuple);
    const fact = (await this.facts([{ keyId, tuple }])).get(keyId);
    if (fact !== undefined && 'destroyed' in fact) return { keyId, destroyed: fact.destroyed };
    const result = fact === undefined ? undefined : (await this.tupleKeys([{ keyId, tuple, dimensionIds: fact.dimensionIds }])).get(keyId);
    if (result === undefined) throw new LetheError(ErrorCode.INTERNAL, `no tuple key for ${keyId}`);
    return result;
  }

  /** Drops every secret of the run: ephemeral keys, shared secrets, tuple keys. */
  forget(): void {
    for (const secret of this.#shared.values()) secret.fill(0);
    for (const key of this.#tuples.values()) key.prk.fill(0);
    for (const part of this.#mlkem.values()) part.k.fill(0);
    for (const e of this.#encapsulations.values()) e.mlkemSecret?.fill(0);
    this.#mlkem.clear();
    this.#shared.clear();
    this.#tuples.clear();
    this.#encapsulations = new Map();
    this.#byTenant = new Map();
  }

  async #encapsulation(tenant: string | null): Promise<RunEncapsulation> {
    const id = encapsulationId(this.snapshotId, tenant);
    let found = this.#encapsulations.get(id);
    if (found === undefined) {
      const pair = generateRawKeyPair();
      this.observe?.('ephemeral', pair.privateKey);
      const mlkemSecret = this.postQuantum ? randomBytes(32) : null;
      if (mlkemSecret !== null) this.observe?.('ephemeral', mlkemSecret);
      found = { id, tenant, privateKey: x25519PrivateKey(pair.privateKey), ephemeral: pair.publicKey, mlkemSecret };
      pair.privateKey.fill(0);
      // Recorded before any cell refers to it (the vault's foreign key says so too).
      await this.vault.insertEncapsulations([
        { id, purpose: 'snapshot', snapshotId: this.snapshotId, tenant, kem: mlkemSecret === null ? 'x25519' : 'x25519-mlkem768', ephemeral: found.ephemeral },
      ]);
      this.#encapsulations.set(id, found);
      this.#byTenant.set(tenant, found);
    }
    return found;
  }

  async #secret(encapsulation: RunEncapsulation, dimensionId: string, tenant: string | null): Promise<Buffer> {
    const cacheKey = `${encapsulation.id}\n${dimensionId}`;
    const known = this.#shared.get(cacheKey);
    if (known !== undefined) return known;
    const publicKey = await this.#dimensionPublicKey(dimensionId, tenant);
    const secret = sharedSecret(encapsulation.privateKey, publicKey, `dimension key ${dimensionId}`);
    this.observe?.('shared', secret);
    this.#shared.set(cacheKey, secret);
    return secret;
  }

  /**
   * `K_D` and `C_D` of dimension key `dimensionId` in a hybrid encapsulation: ML-KEM-768
   * encapsulation to its ML-KEM public key with randomness derived from the run's secret,
   * the ciphertext queued for the vault. A key without an ML-KEM half (made before
   * keys.postQuantum) stops the backup: writing its cells X25519-only would be a silent
   * downgrade.
   */
  async #mlkemPart(encapsulation: RunEncapsulation, dimensionId: string): Promise<{ k: Uint8Array; ciphertext: Uint8Array }> {
    const cacheKey = `${encapsulation.id}\n${dimensionId}`;
    let publicKey = this.#mlkemPublic.get(dimensionId);
    if (publicKey === undefined) {
      publicKey = (await this.vault.getMlkemPublicKeys([dimensionId])).get(dimensionId);
      if (publicKey === undefined) {
        throw new LetheError(
          ErrorCode.KEY,
          `dimension key ${dimensionId} has no ML-KEM-768 half, and keys.postQuantum is on: run \`lethe init\` (with the master key) to give ` +
            'every live key made before the option its ML-KEM half, then back up again',
        );
      }
      this.#mlkemPublic.set(dimensionId, publicKey);
    }
    const { ciphertext, secret } = mlkemEncapsulate(publicKey, `dimension key ${dimensionId}`, mlkemRandomness(encapsulation.mlkemSecret as Buffer, dimensionId));
    this.observe?.('shared', secret);
    const part = { k: secret, ciphertext };
    this.#mlkem.set(cacheKey, part);
    this.#pendingCiphertexts.push({ encapsulation: encapsulation.id, dimensionId, ciphertext });
    return part;
  }

  /**
   * The facts of each of `ids` the vault has (absent: not created yet), from the cache or
   * the vault. The result is the caller's own: an entry the cache drops meanwhile cannot
   * turn a destroyed key into an unknown one.
   */
  async #loadDimensions(ids: readonly string[]): Promise<Map<string, DimensionFacts>> {
    const out = new Map<string, DimensionFacts>();
    const missing: string[] = [];
    for (const id of new Set(ids)) {
      const known = this.#dimensions.get(id);
      if (known === undefined) missing.push(id);
      else out.set(id, known);
    }
    if (missing.length === 0) return out;
    for (const [id, info] of await this.vault.getDimensionKeys(missing)) {
      const facts = { publicKey: decodeRecipient(info.recipient), destroyed: info.destroyed };
      this.#dimensions.set(id, facts);
      out.set(id, facts);
    }
    return out;
  }

  async #dimensionPublicKey(id: string, tenant: string | null): Promise<Uint8Array> {
    const known = (await this.#loadDimensions([id])).get(id) ?? (await this.#createMissing([{ id, tenant }])).get(id);
    if (known === undefined) throw new LetheError(ErrorCode.VAULT, `dimension key ${id} was not stored`);
    return known.publicKey;
  }

  /**
   * Creates the dimension keys among `wanted` the vault does not have, in one statement: a
   * fresh X25519 key each, its private half (PKCS#8 PEM) age-encrypted to the master key's
   * public recipient and then dropped. When another writer won a race, its key is used.
   */
  async #createMissing(wanted: readonly { id: string; tenant: string | null }[]): Promise<Map<string, DimensionFacts>> {
    const byId = new Map(wanted.map((w) => [w.id, w.tenant]));
    const known = await this.#loadDimensions([...byId.keys()]);
    const missing = [...byId].filter(([id]) => !known.has(id));
    if (missing.length === 0) return known;
    const fresh = [];
    // The current master epoch (public): fixed for the run, since rotations take the backup job lock too.
    this.#wrapTarget ??= await currentWrapTarget(this.vault, this.masterRecipient);
    const target = this.#wrapTarget;
    for (const [id, tenant] of missing) {
      const pair = generateRawKeyPair();
      const seed = this.postQuantum ? newMlKemSeed() : null;
      const mlkemPublic = seed === null ? null : mlkemKeyPair(seed).publicKey;
      const secret = Buffer.from(encodeDimensionSecret({ x25519: pair.privateKey, mlkemSeed: seed }), 'utf8');
      const wrappedIdentity = await wrapDimensionSecret(target, secret);
      secret.fill(0);
      pair.privateKey.fill(0);
      seed?.fill(0);
      if (mlkemPublic !== null) this.#mlkemPublic.set(id, mlkemPublic);
      fresh.push({
        id,
        kind: dimensionKind(id),
        tenant,
        recipient: encodeRecipient(pair.publicKey),
        wrappedIdentity,
        ...(target.epoch === null ? {} : { masterEpoch: target.epoch }),
        ...(mlkemPublic === null ? {} : { mlkemPublic }),
      });
    }
    const stored = await this.vault.insertDimensionKeys(fresh);
    for (const key of fresh) {
      const recipient = stored.get(key.id);
      if (recipient === undefined) throw new LetheError(ErrorCode.VAULT, `dimension key ${key.id} was not stored`);
      if (recipient === key.recipient) this.dimensionKeysCreated += 1;
      // Another writer's key won the race: its ML-KEM public key is read from the vault when needed.
      else this.#mlkemPublic.delete(key.id);
      const facts = { publicKey: decodeRecipient(recipient), destroyed: false };
      this.#dimensions.set(key.id, facts);
      known.set(key.id, facts);
    }
    return known;
  }
}
