import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { equalConstantTime } from '../crypto/index.ts';
import { ErrorCode, isLetheError, wrapForeign } from '../errors/index.ts';
import { isBlobTable, rowTableOf } from '../blobs/index.ts';
import { KeyOpener, type MasterKeyring } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import type { SnapshotHeader, TrustedManifest } from '../manifest/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { CompleteSnapshot, Vault } from '../vault/index.ts';
import { leftOut, loadSnapshot, type Finding, type LoadProgress, type ShreddedByKey } from './engine.ts';
import { openSnapshotManifest } from './manifest-source.ts';
import { snapshotSchemaReport, type SnapshotSchemaReport } from './schema-report.ts';
import { excessPrivileges } from './target-role.ts';
import { pgClientConfig } from '../tls/index.ts';

export interface VerifyOptions {
  readonly vault: Vault;
  readonly store: ObjectStore;
  /** Opens dimension-key wraps: a keyring by master epoch (keys/master.ts), or one age identity. */
  readonly masterIdentity: string | MasterKeyring;
  /** `latest` or a snapshot id. */
  readonly snapshot: string;
  /** A database URL on the server where the scratch database is created and dropped. */
  readonly scratchServerUrl: string;
  readonly concurrency: number;
  readonly actor: string;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: LoadProgress) => void;
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
  /** Files outside the database checked (sha256, AEAD, length), per mapped table; {} when the snapshot has none. */
  readonly blobsByTable: Record<string, number>;
  readonly findings: Finding[];
  /** Cells left out because a key was destroyed on purpose, per key, with its destruction record. */
  readonly shredded: ShreddedByKey[];
  /** Foreign keys that only hold NOT VALID because rows refer to shredded rows. */
  readonly constraintsNotValidated: string[];
  /** Things the operator should fix that do not make the drill fail (a scratch role with too much power). */
  readonly warnings: string[];
  /** Age of the newest data in the snapshot at the time of the drill (RPO), in seconds. */
  readonly dataAgeSeconds: number | null;
  /** The snapshot's schema and what changed since the snapshot before; null when its manifest could not be read. */
  readonly schema: SnapshotSchemaReport | null;
  /** Wall time of the drill, including the restore into the scratch database (RTO). */
  readonly durationMs: number;
}

async function sha256Of(store: ObjectStore, key: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of await store.get(key)) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * Checks what the authenticated manifest points to outside itself: that the previous
 * manifest object still hashes to the sha256 the link names. (The link itself was checked
 * against the vault before the manifest was used.)
 */
async function checkLinks(store: ObjectStore, vault: Vault, header: SnapshotHeader): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (header.previous !== null) {
    const previous = await vault.findSnapshot(header.previous.id);
    if (previous?.status === 'complete' && previous.manifestKey !== null) {
      try {
        const actual = await sha256Of(store, previous.manifestKey);
        if (!equalConstantTime(actual, header.previous.sha256)) {
          findings.push({ subject: previous.manifestKey, code: 'CHAIN', problem: `the previous manifest's sha256 is ${actual}, the link says ${header.previous.sha256}` });
        }
      } catch (err) {
        findings.push({ subject: previous.manifestKey, code: isLetheError(err) ? err.code : 'STORAGE', problem: `the previous manifest cannot be read: ${(err as Error).message}` });
      }
    }
  }
  return findings;
}

/** The findings a manifest that cannot be trusted (or read) stands for: one per problem. */
function manifestFindings(key: string, err: unknown): Finding[] {
  if (!isLetheError(err) || err.code === ErrorCode.ABORTED) throw err;
  const problems = err.details?.['problems'];
  if (Array.isArray(problems) && problems.length > 0) {
    return (problems as { code: string; problem: string }[]).map((p) => ({ subject: key, code: p.code, problem: p.problem }));
  }
  return [{ subject: key, code: err.code, problem: err.message }];
}

/**
 * The restore drill: authenticates the manifest (sha256 against the vault's record,
 * signature, place in the chain; a manifest that fails is reported and nothing of it is
 * used), restores the snapshot into a scratch database that it creates and then drops,
 * checking every cell (sha256 before decryption, AEAD and row count after), its keys,
 * and the schema's constraints over the restored rows. Collects every finding rather than
 * stopping at the first. Records the result and its duration in the vault and the audit log.
 */
export async function runVerify(options: VerifyOptions): Promise<VerifyResult> {
  const started = Date.now();
  const { vault, store, log } = options;
  const snapshot = await vault.getSnapshot(options.snapshot);
  const runLog = log.child({ job: 'verify', snapshotId: snapshot.id });
  const opened = await openSnapshotManifest(vault, store, snapshot, options.signal === undefined ? {} : { signal: options.signal }).then(
    (manifest) => ({ manifest }),
    (err: unknown) => ({ findings: manifestFindings(snapshot.manifestKey, err) }),
  );
  let result: VerifyResult;
  if ('manifest' in opened) {
    try {
      result = await drill(options, snapshot, opened.manifest, started, runLog);
    } finally {
      await opened.manifest.close();
    }
  } else {
    result = {
      snapshotId: snapshot.id,
      ok: false,
      cells: 0,
      cellsVerified: 0,
      cellsShredded: 0,
      cellsFailed: 0,
      rows: 0,
      blobsByTable: {},
      findings: opened.findings,
      shredded: [],
      constraintsNotValidated: [],
      warnings: [],
      dataAgeSeconds: null,
      schema: null,
      durationMs: Date.now() - started,
    };
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

/**
 * The files the snapshot's backup could not take (missing, unreadable, outside their store),
 * from the vault's stats of it: the rows are in the snapshot, the files are not, so a
 * verify of it says so rather than pass over the gap.
 */
function blobsNotBackedUp(stats: Readonly<Record<string, unknown>>): Finding[] {
  const listed = Array.isArray(stats['findings']) ? (stats['findings'] as unknown[]) : [];
  const blobs = stats['blobs'] as { findings?: unknown } | undefined;
  const counted = typeof blobs?.findings === 'number' ? blobs.findings : 0;
  const out: Finding[] = listed.slice(0, 20).map((raw) => {
    const f = raw as { table?: unknown; primaryKey?: unknown; kind?: unknown; store?: unknown };
    const key = Object.entries((f.primaryKey ?? {}) as Record<string, unknown>).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ');
    return {
      subject: `table ${String(f.table)} (${key})`,
      code: 'BLOB_NOT_BACKED_UP',
      problem: `its file was ${String(f.kind)} in blob store ${String(f.store)} at backup: the row is in the snapshot, the file is not`,
    };
  });
  if (counted > out.length) {
    out.push({ subject: 'files', code: 'BLOB_NOT_BACKED_UP', problem: `${counted - out.length} more file(s) the backup could not take (see its audit entry)` });
  }
  return out;
}

/** Loads an authenticated snapshot into a scratch database it creates and drops. */
async function drill(options: VerifyOptions, snapshot: CompleteSnapshot, manifest: TrustedManifest, started: number, runLog: Logger): Promise<VerifyResult> {
  const { vault, store } = options;
  const scratchName = `lethe_verify_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client(pgClientConfig(options.scratchServerUrl, { application_name: 'lethe verify' }));
  admin.on('error', () => undefined);
  let scratch: pg.Client | undefined;
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(scratchName)}`);
    const url = new URL(options.scratchServerUrl);
    url.pathname = `/${scratchName}`;
    scratch = new pg.Client(pgClientConfig(url.toString(), { application_name: 'lethe verify' }));
    scratch.on('error', () => undefined);
    await scratch.connect();
    const warnings = (await excessPrivileges(scratch)).map((w) => `verify.scratchUrl: ${w}; give verify a role with CREATEDB and nothing more (runbooks/restore-role.md)`);
    for (const warning of warnings) runLog.warn({ warning, alsoInResult: true }, 'scratch database role has more power than a restore needs');
    await scratch.query('BEGIN');
    const loaded = await loadSnapshot({
      store,
      vault,
      opener: new KeyOpener(vault, options.masterIdentity),
      manifest,
      snapshot: { id: snapshot.id, cellsLeftOut: leftOut(snapshot.stats) },
      target: scratch,
      targetSchema: 'public',
      mode: 'verify',
      concurrency: options.concurrency,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await scratch.query('ROLLBACK');
    const findings = [...loaded.findings, ...(await checkLinks(store, vault, loaded.header)), ...blobsNotBackedUp(snapshot.stats)];
    const schema = await snapshotSchemaReport(vault, store, manifest.schema, snapshot.previousId, options.signal);
    const newest = Date.parse(loaded.header.source.databaseTime);
    return {
      snapshotId: snapshot.id,
      ok: findings.length === 0 && loaded.tally.failed === 0,
      cells: loaded.tally.cells,
      cellsVerified: loaded.tally.verified,
      cellsShredded: loaded.tally.shredded,
      cellsFailed: loaded.tally.failed,
      rows: loaded.tally.rows,
      blobsByTable: Object.fromEntries([...loaded.rowsByTable].filter(([table]) => isBlobTable(table)).map(([table, n]) => [rowTableOf(table), n])),
      findings,
      shredded: loaded.shredded,
      constraintsNotValidated: loaded.constraintsNotValidated,
      warnings,
      dataAgeSeconds: Math.round((Date.now() - newest) / 1000),
      schema,
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
}
