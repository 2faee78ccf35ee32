import { verifySignature } from '../crypto/index.ts';
import type { Signer } from '../keys/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { AuditEntry, Vault } from '../vault/index.ts';

/** Object key of an audit entry: zero-padded so keys sort in chain order. */
export function auditObjectKey(seq: number): string {
  return `audit/${String(seq).padStart(12, '0')}.json`;
}

/** Domain tag of the signature an audit object carries. */
export const AUDIT_EXPORT_FORMAT = 'lethe.audit-export.v1';

/**
 * The bytes an audit object's `exportSignature` covers: the entry's position and its hash,
 * which covers every other field. The hash chain alone proves order, not authorship (anyone
 * can extend a chain of plain hashes); the signature proves a lethe job exported the entry.
 */
export function auditExportMessage(entry: { seq: number; hash: string }): Uint8Array {
  return new TextEncoder().encode(`${AUDIT_EXPORT_FORMAT}\n${entry.seq}\n${entry.hash}\n`);
}

/** True when `signature` is a valid export signature of `entry` by one of `trusted` (id → key). */
export function auditExportSignedBy(
  entry: { seq: number; hash: string },
  signature: { keyId: string; value: string },
  trusted: ReadonlyMap<string, string>,
): boolean {
  const publicKey = trusted.get(signature.keyId);
  return publicKey !== undefined && verifySignature(publicKey, auditExportMessage(entry), signature.value);
}

/**
 * Copies audit entries not yet in the bucket to `audit/<seq>.json` (WORM when a lock is
 * given), each with an `exportSignature` by the exporting job's key, so the chain outlives
 * the vault, an auditor can read it with bucket access alone, and a vault restore replays
 * only entries a lethe job exported. Jobs whose credentials cannot write the bucket (verify,
 * restore) only append to the vault; the next job that can write (backup) exports what
 * they recorded. Returns how many entries were written.
 */
export async function exportAudit(vault: Vault, store: ObjectStore, signer: Signer, lock?: ObjectLock): Promise<number> {
  let written = 0;
  let last = await vault.auditExportedSeq();
  for await (const entry of vault.iterateAudit(last + 1)) {
    const object: AuditEntry & { exportSignature: { keyId: string; value: string } } = {
      ...entry,
      exportSignature: { keyId: signer.id, value: signer.sign(auditExportMessage(entry)) },
    };
    await store.put(auditObjectKey(entry.seq), Buffer.from(`${JSON.stringify(object)}\n`, 'utf8'), lock === undefined ? {} : { lock });
    last = entry.seq;
    written += 1;
    if (written % 100 === 0) await vault.setAuditExportedSeq(last);
  }
  if (written > 0) await vault.setAuditExportedSeq(last);
  return written;
}
