import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { ErrorCode, isLetheError, wrapForeign } from '../errors/index.ts';
import { KeyOpener } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { SnapshotRecord, Vault } from '../vault/index.ts';
import { leftOut, loadSnapshot, type Finding, type ShreddedByKey } from './engine.ts';

export interface VerifyOptions {
  readonly vault: Vault;
  readonly store: ObjectStore;
  readonly masterIdentity: string;
  /** `latest` or a snapshot id. */
  readonly snapshot: string;
  /** A database URL on the server where the scratch database is created and dropped. */
  readonly scratchServerUrl: string;
  readonly concurrency: number;
  readonly actor: string;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { cells: number; rows: number }) => void;
}

/** The outcome of `lethe verify`, as printed with `--json`. */
export interface VerifyResult {
  readonly snapshotId: string;
  readonly ok: boolean;
  readonly cells: number;
  readonly cellsVerified: number;
  readonly cellsShredded: number;
  readonly cellsFailed: number;
  readonly rows: number;
  readonly findings: Finding[];
  /** Cells left out because a key was destroyed on purpose, per key, with its destruction record. */
  readonly shredded: ShreddedByKey[];
  /** Foreign keys that only hold NOT VALID because rows refer to shredded rows. */
  readonly constraintsNotValidated: string[];
  /** Age of the newest data in the snapshot at the time of the drill (RPO), in seconds. */
  readonly dataAgeSeconds: number | null;
  /** Wall time of the drill, including the restore into the scratch database (RTO). */
  readonly durationMs: number;
}

async function sha256Of(store: ObjectStore, key: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of await store.get(key)) hash.update(chunk);
  return hash.digest('hex');
}

/** Checks the manifest's link to its predecessor and the key files it depends on. */
async function checkLinks(store: ObjectStore, vault: Vault, snapshot: SnapshotRecord, header: { previous: { id: string; sha256: string } | null }, keyFiles: readonly { key: string; sha256: string }[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (header.previous !== null) {
    const previous = await vault.findSnapshot(header.previous.id);
    if (previous === null) {
      findings.push({ subject: 'previous manifest', code: 'CHAIN', problem: `the manifest links to snapshot ${header.previous.id}, which the vault does not know` });
    } else if (previous.status === 'complete' && previous.manifestSha256 !== header.previous.sha256) {
      findings.push({ subject: 'previous manifest', code: 'CHAIN', problem: `the link to ${previous.id} names sha256 ${header.previous.sha256}, the vault recorded ${previous.manifestSha256}` });
    } else if (previous.status === 'complete' && previous.manifestKey !== null) {
      try {
        const actual = await sha256Of(store, previous.manifestKey);
        if (actual !== header.previous.sha256) {
          findings.push({ subject: previous.manifestKey, code: 'CHAIN', problem: `the previous manifest's sha256 is ${actual}, the link says ${header.previous.sha256}` });
        }
      } catch (err) {
        findings.push({ subject: previous.manifestKey, code: isLetheError(err) ? err.code : 'STORAGE', problem: `the previous manifest cannot be read: ${(err as Error).message}` });
      }
    }
  }
  if (snapshot.previousId !== (header.previous?.id ?? null)) {
    findings.push({ subject: 'previous manifest', code: 'CHAIN', problem: `the manifest links to ${header.previous?.id ?? 'nothing'}, the vault to ${snapshot.previousId ?? 'nothing'}` });
  }
  for (const file of keyFiles) {
    try {
      const actual = await sha256Of(store, file.key);
      if (actual !== file.sha256) findings.push({ subject: file.key, code: 'INTEGRITY', problem: `key file sha256 ${actual} does not match the manifest (${file.sha256})` });
    } catch (err) {
      findings.push({ subject: file.key, code: isLetheError(err) ? err.code : 'STORAGE', problem: `key file cannot be read: ${(err as Error).message}` });
    }
  }
  return findings;
}

/**
 * The restore drill: restores a snapshot into a scratch database that it creates and then
 * drops, checking every cell (sha256 before decryption, digest and row count after), the
 * manifest's signature, sha256 and link to the previous manifest, the key files, and the
 * schema's constraints over the restored rows. Collects every finding rather than stopping
 * at the first. Records the result and its duration in the vault and the audit log.
 */
export async function runVerify(options: VerifyOptions): Promise<VerifyResult> {
  const started = Date.now();
  const { vault, store, log } = options;
  const snapshot = await vault.getSnapshot(options.snapshot);
  const runLog = log.child({ job: 'verify', snapshotId: snapshot.id });
  const scratchName = `lethe_verify_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: options.scratchServerUrl, application_name: 'lethe verify' });
  admin.on('error', () => undefined);
  let scratch: pg.Client | undefined;
  let result: VerifyResult;
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(scratchName)}`);
    const url = new URL(options.scratchServerUrl);
    url.pathname = `/${scratchName}`;
    scratch = new pg.Client({ connectionString: url.toString(), application_name: 'lethe verify' });
    scratch.on('error', () => undefined);
    await scratch.connect();
    await scratch.query('BEGIN');
    const loaded = await loadSnapshot({
      store,
      vault,
      opener: new KeyOpener(vault, options.masterIdentity),
      snapshot: { id: snapshot.id, manifestKey: snapshot.manifestKey, manifestSha256: snapshot.manifestSha256, cellsLeftOut: leftOut(snapshot.stats) },
      target: scratch,
      targetSchema: 'public',
      mode: 'verify',
      concurrency: options.concurrency,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await scratch.query('ROLLBACK');
    const findings = [...loaded.findings];
    if (loaded.header !== null) {
      findings.push(...(await checkLinks(store, vault, snapshot, loaded.header, loaded.keyFiles)));
    }
    const newest = loaded.header === null ? null : Date.parse(loaded.header.source.databaseTime);
    result = {
      snapshotId: snapshot.id,
      ok: findings.length === 0 && loaded.tally.failed === 0 && loaded.header !== null,
      cells: loaded.tally.cells,
      cellsVerified: loaded.tally.verified,
      cellsShredded: loaded.tally.shredded,
      cellsFailed: loaded.tally.failed,
      rows: loaded.tally.rows,
      findings,
      shredded: loaded.shredded,
      constraintsNotValidated: loaded.constraintsNotValidated,
      dataAgeSeconds: newest === null ? null : Math.round((Date.now() - newest) / 1000),
      durationMs: Date.now() - started,
    };
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `verifying snapshot ${snapshot.id}`, err);
  } finally {
    await scratch?.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${admin.escapeIdentifier(scratchName)} WITH (FORCE)`).catch((err: unknown) => {
      runLog.error({ err, database: scratchName }, 'could not drop the scratch database; drop it by hand');
    });
    await admin.end().catch(() => undefined);
  }
  await vault.recordVerification({
    snapshotId: snapshot.id,
    startedAt: new Date(started),
    durationMs: result.durationMs,
    ok: result.ok,
    result: { ...result, findings: result.findings.slice(0, 1000) },
  });
  await vault.appendAudit({
    actor: options.actor,
    action: result.ok ? 'verify.ok' : 'verify.failed',
    subject: snapshot.id,
    details: { cells: result.cells, cellsFailed: result.cellsFailed, cellsShredded: result.cellsShredded, findings: result.findings.length, durationMs: result.durationMs },
  });
  runLog.info({ ok: result.ok, findings: result.findings.length }, 'verify done');
  return result;
}
