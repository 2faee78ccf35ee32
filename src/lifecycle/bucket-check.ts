import { auditExportSignedBy, auditObjectKey } from '../audit/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import { canonicalJson, type Vault } from '../vault/index.ts';
import { isTombstoneKeyFor, TombstoneSchema, tombstoneSignedBy } from './destroy.ts';
import { certificateKey } from './erase.ts';

/** One object of the bucket that disagrees with the vault. */
export interface BucketFinding {
  /** The object's key (or, for a missing object, the key it should have). */
  readonly key: string;
  readonly problem: string;
}

export interface BucketCheckReport {
  /** No findings (objects in `unrecorded` do not make it false). */
  readonly ok: boolean;
  /** Objects listed under the prefixes checked. */
  readonly objects: number;
  /** Objects lethe wrote that are missing, altered or replaced: damage or tampering. */
  readonly findings: BucketFinding[];
  /**
   * Objects under lethe's prefixes that the vault has no record of lethe writing here (a
   * file someone else put there, a copy from another store, or objects written after the
   * vault backup a restored vault came from). Reported, never trusted, never deleted; like
   * lifecycle, the check does not fail on them, so that a bucket writer cannot make every
   * check fail.
   */
  readonly unrecorded: BucketFinding[];
}

/** Where lethe keeps objects whose writing the vault records in `store_objects`. */
const RECORDED_PREFIXES = ['snapshots/', 'segments/', 'packs/', 'vault/', 'keys/'] as const;
const AUDIT_OBJECT = /^audit\/(\d{12})\.json$/;
const CERTIFICATE_OBJECT = /^certificates\/(.+)\.json$/;

/**
 * Compares the bucket's lethe objects with what the vault says lethe wrote there, and
 * returns every disagreement, as a finding or, for an object the vault does not know, in
 * `unrecorded` (never throws on a bad object; storage and database errors propagate):
 *
 * - `audit/`: every entry the vault has exported (up to its export mark) must be there; every
 *   entry there must be byte for byte one the vault holds (entries past the mark are those an
 *   export that was interrupted wrote) with an export signature by a backup or lifecycle key
 *   of the vault.
 * - `destructions/`: every tombstone must be signed by a lifecycle key, stored under a name
 *   for the key it names, of a key the vault records as destroyed; every destroyed key the
 *   vault has a destruction record for must have one. An object that is no tombstone at all
 *   is unrecorded (vault restore ignores it the same way).
 * - `certificates/`: the certificate of an executed request must be there and be the one the
 *   vault keeps; one of a request the vault does not know is unrecorded.
 * - `snapshots/`, `segments/`, `packs/`, `vault/`, `keys/`: every object must be one the
 *   vault records lethe writing to this store (a vault backup's `.sig` goes with its
 *   backup), else it is unrecorded. Whether a snapshot's objects are intact is `lethe
 *   verify`'s question.
 */
export async function checkBucket(vault: Vault, store: ObjectStore): Promise<BucketCheckReport> {
  const findings: BucketFinding[] = [];
  const unrecorded: BucketFinding[] = [];
  let objects = 0;
  const text = async (key: string): Promise<unknown> => {
    try {
      return JSON.parse(Buffer.from(await store.getBytes(key)).toString('utf8')) as unknown;
    } catch (err) {
      if (err instanceof SyntaxError) return undefined;
      throw err;
    }
  };

  // audit/
  const exported = await vault.auditExportedSeq();
  const signers = await vault.getSigningPublicKeys(['backup', 'lifecycle', 'legacy']);
  const auditKeys = new Set<string>();
  for await (const info of store.list('audit/')) {
    objects += 1;
    if (AUDIT_OBJECT.test(info.key)) auditKeys.add(info.key);
    else unrecorded.push({ key: info.key, problem: 'not an audit entry lethe exports (audit/<12-digit seq>.json)' });
  }
  for await (const entry of vault.iterateAudit(1)) {
    const key = auditObjectKey(entry.seq);
    if (!auditKeys.delete(key)) {
      // Entries after the export mark are exported by the next job that can write the bucket.
      if (entry.seq <= exported) findings.push({ key, problem: `audit entry ${entry.seq} was exported but is missing from the bucket` });
      continue;
    }
    const stored = await text(key);
    const signature = exportSignatureOf(stored);
    if (signature === null && JSON.stringify(entry) === JSON.stringify(stored)) {
      // Exported by a lethe from before export signatures: the vault's entry, but unproven.
      unrecorded.push({ key, problem: 'carries no export signature (a lethe before signed exports wrote it); a vault restore replays it only with --allow-unsigned-audit' });
    } else if (signature === null) {
      findings.push({ key, problem: `differs from audit entry ${entry.seq} in the vault, or is unreadable` });
    } else if (JSON.stringify({ ...entry, exportSignature: signature }) !== JSON.stringify(stored)) {
      findings.push({ key, problem: `differs from audit entry ${entry.seq} in the vault` });
    } else if (!auditExportSignedBy(entry, signature, signers)) {
      findings.push({ key, problem: `its export signature (key ${signature.keyId}) is not valid by a signing key of the vault` });
    }
  }
  for (const key of auditKeys) findings.push({ key, problem: 'the vault has no audit entry with this seq: it was not exported by lethe' });

  // destructions/
  const lifecycleKeys = await vault.getSigningPublicKeys(['lifecycle', 'legacy']);
  const destroyed = (await vault.lifecycleDimensionKeys()).filter((k) => k.destroyed).map((k) => k.id);
  const records = await vault.getDestructions(destroyed);
  const tombstoned = new Set<string>();
  for await (const info of store.list('destructions/')) {
    objects += 1;
    const parsed = TombstoneSchema.safeParse(await text(info.key));
    const problem = !parsed.success
      ? 'not a tombstone'
      : !isTombstoneKeyFor(info.key, parsed.data.keyId)
        ? `it names ${parsed.data.keyId}, whose tombstones are stored under another name`
        : !tombstoneSignedBy(parsed.data, lifecycleKeys)
          ? `not signed by a lifecycle key of the vault (key ${parsed.data.signature.keyId})`
          : !records.has(parsed.data.keyId)
            ? `the vault records no destruction of ${parsed.data.keyId}`
            : null;
    if (!parsed.success) unrecorded.push({ key: info.key, problem: 'not a tombstone' });
    else if (problem !== null) findings.push({ key: info.key, problem });
    else tombstoned.add(parsed.data.keyId);
  }
  for (const keyId of records.keys()) {
    if (!tombstoned.has(keyId)) {
      findings.push({ key: `destructions/ (${keyId})`, problem: `destroyed key ${keyId} has no valid tombstone in the bucket` });
    }
  }

  // certificates/
  const certificates = new Map<string, unknown>();
  for (const request of await vault.listEraseRequests()) {
    if (request.status === 'executed' && request.certificate !== null) {
      certificates.set(certificateKey(request.id), request.certificate);
    }
  }
  for await (const info of store.list('certificates/')) {
    objects += 1;
    const mine = CERTIFICATE_OBJECT.test(info.key) ? certificates.get(info.key) : undefined;
    if (mine === undefined) {
      unrecorded.push({ key: info.key, problem: 'the vault has no executed deletion request with this certificate' });
      continue;
    }
    certificates.delete(info.key);
    const stored = await text(info.key);
    if (stored === undefined || canonicalJson(stored) !== canonicalJson(mine)) {
      findings.push({ key: info.key, problem: 'differs from the certificate the vault keeps for this request' });
    }
  }
  for (const key of certificates.keys()) {
    findings.push({ key, problem: 'the certificate of an executed deletion request is missing from the bucket' });
  }

  // objects whose writing the vault records
  const recorded = await vault.storeObjects(store.description);
  for (const prefix of RECORDED_PREFIXES) {
    for await (const info of store.list(prefix)) {
      objects += 1;
      const own = info.key.endsWith('.sig') ? info.key.slice(0, -'.sig'.length) : info.key;
      const record = recorded.get(own);
      if (record === undefined || (own !== info.key && record.kind !== 'vault-backup')) {
        unrecorded.push({ key: info.key, problem: 'the vault has no record of lethe writing this object to this store' });
      }
    }
  }
  return { ok: findings.length === 0, objects, findings, unrecorded };
}

/** The `exportSignature` member of a parsed audit object, or null. */
function exportSignatureOf(stored: unknown): { keyId: string; value: string } | null {
  if (stored === null || typeof stored !== 'object' || Array.isArray(stored)) return null;
  const signature = (stored as Record<string, unknown>)['exportSignature'];
  if (signature === null || typeof signature !== 'object' || Array.isArray(signature)) return null;
  const { keyId, value } = signature as Record<string, unknown>;
  return typeof keyId === 'string' && typeof value === 'string' ? { keyId, value } : null;
}
