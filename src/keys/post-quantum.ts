import { encodeDimensionSecret, mlkemKeyPair, newMlKemSeed, parseDimensionSecret } from '../crypto/index.ts';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';
import { currentWrapTarget, wrapDimensionSecret, type MasterKeyring } from './master.ts';

const PAGE = 500;

/**
 * keys.postQuantum on a vault with keys made before it: gives every live X25519-only
 * dimension key an ML-KEM-768 half. Each key's wrapped secret is opened with the master,
 * checked, extended with a fresh ML-KEM seed (the same X25519 key, so every cell written
 * before still opens with it) and wrapped again to the current master epoch, with the
 * ML-KEM public key beside it. Destroyed keys are left alone. Needs the master key: the
 * backup, which never unwraps a key, cannot do it, and refuses to write a post-quantum
 * encapsulation to a key without its half. Returns the ids upgraded. Idempotent.
 */
export async function addMlkemHalves(
  vault: Vault,
  master: MasterKeyring,
  masterRecipient: string,
  options: { actor: string; signal?: AbortSignal },
): Promise<string[]> {
  const live = (await vault.listDimensionKeys()).filter((k) => !k.destroyed).map((k) => k.id);
  const target = await currentWrapTarget(vault, masterRecipient);
  const upgraded: string[] = [];
  for (let i = 0; i < live.length; i += PAGE) {
    throwIfAborted(options.signal, 'giving dimension keys their ML-KEM halves');
    const page = live.slice(i, i + PAGE);
    const have = await vault.getMlkemPublicKeys(page);
    const lacking = page.filter((id) => !have.has(id));
    if (lacking.length === 0) continue;
    const wrapped = await vault.getWrappedDimensionKeysWithEpoch(lacking);
    for (const id of lacking) {
      const row = wrapped.get(id);
      if (row === undefined || row === null) continue;
      const plain = Buffer.from(await master.unwrap(row.epoch, row.wrapped, `dimension key ${id}`));
      const secret = parseDimensionSecret(plain.toString('utf8'), `dimension key ${id}`);
      plain.fill(0);
      if (secret.x25519 === null || secret.mlkemSeed !== null) {
        throw new LetheError(ErrorCode.KEY, `dimension key ${id} has no ML-KEM public key in the vault, but its wrapped secret is not an X25519-only key: the vault row was altered`);
      }
      const seed = newMlKemSeed();
      const mlkemPublic = mlkemKeyPair(seed).publicKey;
      const text = Buffer.from(encodeDimensionSecret({ x25519: secret.x25519, mlkemSeed: seed }), 'utf8');
      const rewrapped = await wrapDimensionSecret(target, text);
      text.fill(0);
      seed.fill(0);
      secret.x25519.fill(0);
      if (await vault.addMlkemHalf(id, mlkemPublic, rewrapped, target.epoch)) upgraded.push(id);
    }
  }
  if (upgraded.length > 0) {
    await vault.appendAudit({ actor: options.actor, action: 'key.post-quantum', subject: 'dimension keys', details: { keys: upgraded.length } });
  }
  return upgraded;
}
