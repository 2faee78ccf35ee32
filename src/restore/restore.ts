import pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { KeyOpener, type MasterKeyring } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import type { SnapshotHeader } from '../manifest/index.ts';
import type { SchemaDescription } from '../mapping/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';
import { leftOut, loadSnapshot, type LoadProgress, type ShreddedByKey } from './engine.ts';
import { openSnapshotManifest } from './manifest-source.ts';
import { excessPrivileges } from './target-role.ts';
import { pgClientConfig } from '../tls/index.ts';
import { blobTargetSettings, isBlobTable, openBlobTarget, type BlobTarget } from '../blobs/index.ts';
import type { BlobStoreConfig } from '../config/index.ts';

export interface RestoreOptions {
  readonly vault: Vault;
  readonly store: ObjectStore;
  /** Opens dimension-key wraps: a keyring by master epoch (keys/master.ts), or one age identity. */
  readonly masterIdentity: string | MasterKeyring;
  readonly snapshot: string;
  readonly targetUrl: string;
  readonly targetSchema?: string;
  readonly tenant?: string;
  /** Drop tables of the same names in the target first (inside the restore's transaction). */
  readonly replace: boolean;
  /**
   * Where files outside the database go (`file:///dir` or `s3://bucket/prefix`); required
   * when the snapshot holds any. An s3:// target uses the connection settings of the
   * `blobStores` entry on the same bucket.
   */
  readonly blobTarget?: string;
  readonly blobStores?: Readonly<Record<string, BlobStoreConfig>>;
  readonly concurrency: number;
  readonly actor: string;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: LoadProgress) => void;
}

export interface RestoreResult {
  readonly snapshotId: string;
  readonly tenant: string | null;
  readonly tables: number;
  readonly cells: number;
  readonly cellsShredded: number;
  /** Per destroyed key: how many cells it left out, and its destruction record. */
  readonly shredded: ShreddedByKey[];
  /** Foreign keys added NOT VALID because rows refer to shredded rows. */
  readonly constraintsNotValidated: string[];
  readonly rows: number;
  readonly rowsByTable: Record<string, number>;
  /** Files written back to the blob target (each at its original location), and where; 0 and null without blobs. */
  readonly blobs: number;
  readonly blobTarget: string | null;
  /** Things the operator should fix that did not stop the restore (a target role with too much power). */
  readonly warnings: string[];
  readonly durationMs: number;
}

async function checkTarget(
  client: pg.Client,
  schema: string,
  header: SnapshotHeader,
  description: SchemaDescription,
  replace: boolean,
): Promise<void> {
  const names = header.tables.map((t) => t.name);
  const { rows } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r','p','v','m','f')`,
    [schema, names],
  );
  // The snapshot's enum types are created with its tables; DROP TABLE leaves them behind.
  const types = await client.query<{ name: string }>(
    `SELECT t.typname AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = $1 AND t.typname = ANY($2::text[])`,
    [schema, description.enums.map((e) => e.name)],
  );
  if (rows.length === 0 && types.rows.length === 0) return;
  const present = rows.map((r) => r.name).sort();
  const presentTypes = types.rows.map((r) => r.name).sort();
  if (!replace) {
    const what = [
      ...(present.length === 0 ? [] : [`table${present.length > 1 ? 's' : ''} ${present.join(', ')}`]),
      ...(presentTypes.length === 0 ? [] : [`type${presentTypes.length > 1 ? 's' : ''} ${presentTypes.join(', ')}`]),
    ].join(' and ');
    throw new LetheError(
      ErrorCode.TARGET_NOT_EMPTY,
      `the target already has ${what} in schema ${schema}: ` +
        'restore into an empty database, or pass --replace to drop them first (in the same transaction)',
      { details: { tables: present, types: presentTypes } },
    );
  }
  for (const name of present) {
    await client.query(`DROP TABLE IF EXISTS ${client.escapeIdentifier(schema)}.${client.escapeIdentifier(name)} CASCADE`);
  }
  // No CASCADE: a type still used by a table outside the snapshot fails the restore rather
  // than silently dropping that table's column.
  for (const name of presentTypes) {
    await client.query(`DROP TYPE ${client.escapeIdentifier(schema)}.${client.escapeIdentifier(name)}`);
  }
}

/**
 * Restores a whole snapshot, or one tenant's cells (with the system cells), into the
 * database at `targetUrl`, schema and rows, in ONE transaction: a failure of any check
 * rolls everything back, so the target is either fully restored or untouched. The manifest
 * is authenticated (sha256 against the vault, signature, chain) before the target is even
 * connected to, so no SQL derived from an unauthenticated manifest ever reaches it. Refuses
 * a target that already has any of the snapshot's tables or enum types unless `replace` is
 * set. Warns (result `warnings`, log) when the target role is a superuser or can reach the
 * server's files or programs. Cells whose keys were destroyed are left out and counted
 * (they are shredded by design).
 */
export async function runRestore(options: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now();
  const { vault, store } = options;
  const snapshot = await vault.getSnapshot(options.snapshot);
  const schema = options.targetSchema ?? 'public';
  const manifest = await openSnapshotManifest(vault, store, snapshot, options.signal === undefined ? {} : { signal: options.signal });
  // Refused before anything is written: rows restored without their files would look complete.
  const blobTables = Object.keys(manifest.totals.rowsByTable).filter(isBlobTable);
  if (blobTables.length > 0 && options.blobTarget === undefined) {
    await manifest.close();
    throw new LetheError(
      ErrorCode.USAGE,
      `snapshot ${snapshot.id} holds files outside the database (${blobTables.join(', ')}): ` +
        'pass --blob-target file:///DIR or --blob-target s3://BUCKET/PREFIX to write them back (docs/mapping.md)',
      { details: { blobTables } },
    );
  }
  let blobs: BlobTarget | undefined;
  if (options.blobTarget !== undefined) {
    try {
      blobs = await openBlobTarget(options.blobTarget, blobTargetSettings(options.blobTarget, options.blobStores ?? {}));
    } catch (err) {
      await manifest.close();
      throw err;
    }
  }
  const target = new pg.Client(pgClientConfig(options.targetUrl, { application_name: 'lethe restore' }));
  target.on('error', () => undefined);
  try {
    await target.connect();
    const warnings = (await excessPrivileges(target)).map(
      (w) => `the restore target: ${w}; restore as a role that owns the target database and nothing more (runbooks/restore-role.md)`,
    );
    for (const warning of warnings) options.log.warn({ warning, alsoInResult: true }, 'restore target role has more power than a restore needs');
    const missing = (snapshot.stats['blobs'] as { findings?: unknown } | undefined)?.findings;
    if (typeof missing === 'number' && missing > 0) {
      warnings.push(`${missing} file(s) outside the database were missing or unreadable when snapshot ${snapshot.id} was taken: their rows are restored without them (lethe verify --snapshot ${snapshot.id} lists them)`);
    }
    await target.query('BEGIN');
    const loaded = await loadSnapshot({
      store,
      vault,
      opener: new KeyOpener(vault, options.masterIdentity),
      manifest,
      snapshot: { id: snapshot.id, cellsLeftOut: leftOut(snapshot.stats) },
      target,
      targetSchema: schema,
      mode: 'restore',
      concurrency: options.concurrency,
      beforeLoad: async (header, description) => {
        await target.query(`CREATE SCHEMA IF NOT EXISTS ${target.escapeIdentifier(schema)}`);
        await checkTarget(target, schema, header, description, options.replace);
      },
      ...(options.tenant === undefined ? {} : { tenant: options.tenant }),
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(blobs === undefined ? {} : { blobs }),
    });
    await target.query('COMMIT');
    await blobs?.close();
    const result: RestoreResult = {
      snapshotId: snapshot.id,
      tenant: options.tenant ?? null,
      tables: loaded.header.tables.length,
      cells: loaded.tally.verified,
      cellsShredded: loaded.tally.shredded,
      shredded: loaded.shredded,
      constraintsNotValidated: loaded.constraintsNotValidated,
      rows: loaded.tally.rows,
      rowsByTable: Object.fromEntries(loaded.rowsByTable),
      blobs: [...loaded.rowsByTable].filter(([table]) => isBlobTable(table)).reduce((n, [, count]) => n + count, 0),
      blobTarget: blobs?.description ?? null,
      warnings,
      durationMs: Date.now() - started,
    };
    await vault.appendAudit({
      actor: options.actor,
      action: 'restore',
      subject: snapshot.id,
      details: { target: new URL(options.targetUrl).host, tenant: result.tenant, cells: result.cells, rows: result.rows },
    });
    options.log.info({ job: 'restore', snapshotId: snapshot.id, rows: result.rows }, 'restore complete');
    return result;
  } catch (err) {
    await blobs?.close().catch(() => undefined);
    await target.query('ROLLBACK').catch(() => undefined);
    throw wrapForeign(ErrorCode.DATABASE, `restoring snapshot ${snapshot.id}`, err);
  } finally {
    await target.end().catch(() => undefined);
    await manifest.close();
  }
}
