import type { KeyObject } from 'node:crypto';
import {
  decodeRecipient,
  dimensionSecretProblem,
  heldWrapKey,
  hybridTupleKey,
  mlkemDecapsulate,
  mlkemKeyPair,
  openSealed,
  parseDimensionSecret,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  type HybridSecret,
} from '../crypto/index.ts';
import type { CellKey, Encapsulation, HeldWrapping, Vault } from '../vault/index.ts';
import { singleIdentityKeyring, type MasterKeyring } from './master.ts';

/** A tuple key (of one tuple under one encapsulation), or why it cannot be had. */
export type OpenedKey =
  | { readonly ok: true; readonly prk: Buffer; readonly dimensionIds: readonly string[] }
  | { readonly ok: false; readonly destroyed: readonly string[] }
  | { readonly ok: false; readonly missing: string }
  /** The vault holds the key, but it cannot be trusted or does not open. */
  | { readonly ok: false; readonly problem: string };

/**
 * A dimension key as opened: its halves (a half that is null was destroyed: the X25519 key,
 * or the expanded ML-KEM-768 decapsulation key of a post-quantum key), null when destroyed
 * or absent, or what is wrong with it.
 */
type OpenedDimension =
  | { readonly x25519: KeyObject | null; readonly mlkem: Uint8Array | null; /** The vault lists an ML-KEM public key for it. */ readonly mlkemListed: boolean }
  | null
  | { readonly problem: string };

/** Opened tuple keys and shared secrets kept per run. */
const MAX_CACHED = 20_000;

/**
 * Opens tuple keys for verify, restore, export and the lifecycle's hold re-wrap: master key
 * → dimension private keys → `Z = X25519(d, E)` for each dimension key of the tuple and the
 * encapsulation `E` its cells were written under → the tuple key (see
 * src/crypto/encapsulation.ts). When a dimension key is destroyed (a period past retention),
 * a held wrapping made for a legal hold (a re-encapsulation to the case key in its place) is
 * tried instead. Nothing is written anywhere; everything is cached for the run, bounded.
 *
 * Every private key unwrapped from the vault is checked, in constant time, against the
 * public key stored beside it: a vault row whose wrapped bytes were swapped for another key
 * wrapped to the (public) master recipient is reported as a `problem` per cell, never used.
 */
export class KeyOpener {
  private readonly dimensions = new Map<string, OpenedDimension>();
  private readonly tuples = new Map<string, OpenedKey>();
  private readonly facts = new Map<string, CellKey>();
  private readonly encapsulations = new Map<string, Encapsulation>();
  /** `X25519(d, E)` per (dimension key, encapsulation): the tuples of one encapsulation share most of them. */
  private readonly secrets = new Map<string, Buffer>();
  /** ML-KEM ciphertexts of hybrid encapsulations, by `<encapsulation>\n<dimension key>`. */
  private readonly ciphertexts = new Map<string, Uint8Array>();
  /** `K_D` per (dimension key, hybrid encapsulation). */
  private readonly kemSecrets = new Map<string, Uint8Array>();

  private readonly master: MasterKeyring;

  /**
   * `master` opens the dimension keys' wraps by their master epoch (master.ts); a bare age
   * identity string is a keyring of that one key, whatever the epoch.
   */
  constructor(
    private readonly vault: Vault,
    master: string | MasterKeyring,
  ) {
    this.master = typeof master === 'string' ? singleIdentityKeyring(master) : master;
  }

  /**
   * Loads what opening these (tuple, encapsulation) pairs needs (a batch): tuple facts,
   * encapsulations, held wrappings and dimension keys, so that {@link open} needs no
   * further round trips for them. Throws only for vault errors.
   */
  async prefetch(pairs: readonly { key: string; encapsulation: string }[]): Promise<void> {
    const wanted = pairs.filter((p) => !this.tuples.has(pairKey(p.key, p.encapsulation)));
    if (wanted.length === 0) return;
    for (const id of this.tuples.keys()) {
      if (this.tuples.size + wanted.length <= MAX_CACHED) break;
      this.tuples.delete(id);
    }
    if (this.facts.size > MAX_CACHED) this.facts.clear();
    if (this.encapsulations.size > MAX_CACHED) this.encapsulations.clear();
    const keyIds = [...new Set(wanted.map((p) => p.key))].filter((id) => !this.facts.has(id));
    for (const [id, fact] of await this.vault.getCellKeys(keyIds)) this.facts.set(id, fact);
    const held = await this.vault.getHeldCellKeys([...new Set(wanted.map((p) => p.key))]);
    const encIds = new Set(wanted.map((p) => p.encapsulation));
    for (const list of held.values()) for (const w of list) encIds.add(w.rewrap);
    const unknownEnc = [...encIds].filter((id) => !this.encapsulations.has(id));
    for (const [id, e] of await this.vault.getEncapsulations(unknownEnc)) this.encapsulations.set(id, e);
    const dimensionIds = new Set<string>();
    for (const p of wanted) for (const d of this.facts.get(p.key)?.dimensionIds ?? []) dimensionIds.add(d);
    for (const list of held.values()) for (const w of list) for (const d of w.dimensionIds) dimensionIds.add(d);
    await this.loadDimensions([...dimensionIds]);
    // Hybrid encapsulations: the ML-KEM ciphertext of each (encapsulation, dimension key) pair.
    const hybrid = (id: string): boolean => this.encapsulations.get(id)?.kem === 'x25519-mlkem768';
    const kemPairs: { encapsulation: string; dimensionId: string }[] = [];
    for (const p of wanted) if (hybrid(p.encapsulation)) for (const d of this.facts.get(p.key)?.dimensionIds ?? []) kemPairs.push({ encapsulation: p.encapsulation, dimensionId: d });
    for (const list of held.values()) for (const w of list) if (hybrid(w.rewrap)) for (const d of w.dimensionIds) kemPairs.push({ encapsulation: w.rewrap, dimensionId: d });
    // 1088 bytes each: a quarter of the other caches' bound keeps them near 5 MB. Cleared
    // before the batch's pairs are looked up, so none the batch needs is dropped.
    if (this.ciphertexts.size + kemPairs.length > MAX_CACHED / 4) this.ciphertexts.clear();
    const unknownPairs = kemPairs.filter((k) => !this.ciphertexts.has(`${k.encapsulation}\n${k.dimensionId}`));
    if (unknownPairs.length > 0) {
      for (const [k, c] of await this.vault.getEncapsulationCiphertexts(unknownPairs)) this.ciphertexts.set(k, c);
    }
    for (const p of wanted) {
      this.tuples.set(pairKey(p.key, p.encapsulation), this.openPair(p.key, p.encapsulation, held.get(p.key) ?? []));
    }
  }

  private openPair(keyId: string, encId: string, held: readonly HeldWrapping[]): OpenedKey {
    const fact = this.facts.get(keyId);
    if (fact === undefined) return { ok: false, missing: keyId };
    const encapsulation = this.encapsulations.get(encId);
    if (encapsulation === undefined) return { ok: false, missing: `encapsulation ${encId}` };
    const direct = this.derive(keyId, fact.dimensionIds, encapsulation);
    if (direct.ok || !('destroyed' in direct)) return direct;
    // A destroyed key: a legal hold may have kept this tuple key under a re-encapsulation.
    for (const wrapping of held.filter((w) => w.encapsulation === encId)) {
      const rewrap = this.encapsulations.get(wrapping.rewrap);
      if (rewrap === undefined) continue;
      const viaCase = this.derive(keyId, wrapping.dimensionIds, rewrap);
      if (!viaCase.ok) {
        if ('problem' in viaCase) return viaCase;
        continue;
      }
      try {
        const prk = openSealed(heldWrapKey(viaCase.prk, keyId, encId), wrapping.wrapped, `the tuple key of ${keyId} kept for case ${wrapping.caseId}`);
        return { ok: true, prk, dimensionIds: fact.dimensionIds };
      } catch (err) {
        return { ok: false, problem: (err as Error).message };
      }
    }
    return direct;
  }

  /** The tuple key of `dimensionIds` under `encapsulation`, or the keys that are gone. */
  private derive(keyId: string, dimensionIds: readonly string[], encapsulation: Encapsulation): OpenedKey {
    const secrets: Buffer[] = [];
    const kems: HybridSecret[] = [];
    const destroyed: string[] = [];
    const hybrid = encapsulation.kem === 'x25519-mlkem768';
    for (const id of dimensionIds) {
      const d = this.dimensions.get(id) ?? null;
      if (d === null) {
        destroyed.push(id);
        continue;
      }
      if ('problem' in d) return { ok: false, problem: `tuple ${keyId} needs dimension key ${id}, which cannot be trusted: ${d.problem}` };
      if (hybrid && !d.mlkemListed) {
        return { ok: false, problem: `encapsulation ${encapsulation.id} is x25519-mlkem768, but dimension key ${id} has no ML-KEM-768 public key in the vault` };
      }
      // A destroyed half shreds the key for every encapsulation that needs that half.
      if (d.x25519 === null || (hybrid && d.mlkem === null)) {
        destroyed.push(id);
        continue;
      }
      const cacheKey = `${id}\n${encapsulation.id}`;
      if (hybrid) {
        const ciphertext = this.ciphertexts.get(`${encapsulation.id}\n${id}`);
        if (ciphertext === undefined) return { ok: false, problem: `encapsulation ${encapsulation.id} has no ML-KEM-768 ciphertext for dimension key ${id} in the vault` };
        let k = this.kemSecrets.get(cacheKey);
        if (k === undefined) {
          try {
            k = mlkemDecapsulate(ciphertext, d.mlkem as Uint8Array, `encapsulation ${encapsulation.id}`);
          } catch (err) {
            return { ok: false, problem: (err as Error).message };
          }
          if (this.kemSecrets.size >= MAX_CACHED) this.kemSecrets.delete(this.kemSecrets.keys().next().value as string);
          this.kemSecrets.set(cacheKey, k);
        }
        kems.push({ z: Buffer.alloc(0), k, ciphertext });
      }
      let secret = this.secrets.get(cacheKey);
      if (secret === undefined) {
        try {
          secret = sharedSecret(d.x25519, encapsulation.ephemeral, `encapsulation ${encapsulation.id}`);
        } catch (err) {
          return { ok: false, problem: (err as Error).message };
        }
        if (this.secrets.size >= MAX_CACHED) this.secrets.delete(this.secrets.keys().next().value as string);
        this.secrets.set(cacheKey, secret);
      }
      secrets.push(secret);
    }
    if (destroyed.length > 0) return { ok: false, destroyed };
    if (hybrid) {
      const parts = kems.map((p, i) => ({ z: secrets[i] as Buffer, k: p.k, ciphertext: p.ciphertext }));
      return { ok: true, prk: hybridTupleKey(parts, encapsulation.ephemeral, dimensionIds), dimensionIds };
    }
    return { ok: true, prk: tupleKey(secrets, encapsulation.ephemeral, dimensionIds), dimensionIds };
  }

  private async loadDimensions(ids: readonly string[]): Promise<void> {
    const unknown = ids.filter((d) => !this.dimensions.has(d));
    if (unknown.length === 0) return;
    // Bounded: the oldest go first and are unwrapped again should they recur.
    const wanted = new Set(ids);
    for (const id of this.dimensions.keys()) {
      if (this.dimensions.size + unknown.length <= MAX_CACHED) break;
      if (!wanted.has(id)) this.dimensions.delete(id);
    }
    const wrapped = await this.vault.getWrappedDimensionKeysWithEpoch(unknown);
    const facts = await this.vault.getDimensionKeys(unknown);
    const mlkemPublics = await this.vault.getMlkemPublicKeys(unknown);
    for (const id of unknown) {
      const bytes = wrapped.get(id);
      const fact = facts.get(id);
      if (fact === undefined) {
        // No row at all is not a shred: a destroyed key keeps its row (and its tombstone).
        this.dimensions.set(id, { problem: 'the vault has no row for it, destroyed or not (a row deleted, or a vault older than the snapshot)' });
        continue;
      }
      const recipient = fact.recipient;
      if (bytes === undefined || bytes === null) {
        this.dimensions.set(id, null);
        continue;
      }
      let secret;
      try {
        const plain = Buffer.from(await this.master.unwrap(bytes.epoch, bytes.wrapped, `dimension key ${id}`));
        secret = parseDimensionSecret(plain.toString('utf8'), `dimension key ${id}`);
        plain.fill(0);
      } catch (err) {
        this.dimensions.set(id, { problem: `its wrapped private key does not open with the master key (${(err as Error).message})` });
        continue;
      }
      let problem: string | null;
      try {
        problem = dimensionSecretProblem(secret, decodeRecipient(recipient), mlkemPublics.get(id) ?? null);
      } catch {
        problem = 'its recipient is not an X25519 public key; the vault row was altered';
      }
      this.dimensions.set(
        id,
        problem !== null
          ? { problem }
          : {
              x25519: secret.x25519 === null ? null : x25519PrivateKey(secret.x25519),
              mlkem: secret.mlkemSeed === null ? null : mlkemKeyPair(secret.mlkemSeed).secretKey,
              mlkemListed: mlkemPublics.has(id),
            },
      );
      secret.x25519?.fill(0);
      secret.mlkemSeed?.fill(0);
    }
  }

  /** The tuple key of `keyId` under encapsulation `encapsulationId`; prefetches it if needed. */
  async open(keyId: string, encapsulationId: string): Promise<OpenedKey> {
    const id = pairKey(keyId, encapsulationId);
    if (!this.tuples.has(id)) await this.prefetch([{ key: keyId, encapsulation: encapsulationId }]);
    return this.tuples.get(id) ?? { ok: false, missing: keyId };
  }
}

function pairKey(keyId: string, encapsulationId: string): string {
  return `${keyId}\n${encapsulationId}`;
}
