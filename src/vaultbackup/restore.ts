import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { z } from 'zod';
import { decryptStream, equalConstantTime, readAgeHeaderStanzas, resolveIdentities, verifySignature, type DeferredUnwrapper, type FileKeyUnwrapper } from '../crypto/index.ts';
import type { Signer } from '../keys/index.ts';
import { ErrorCode, LetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import {
  GENESIS_HASH,
  VAULT_SCHEMA_VERSION,
  Vault,
  auditEntryHash,
  canonicalJson,
  checkSchemaName,
  type AuditEntry,
  type JsonObject,
} from '../vault/index.ts';
import { guardPool, query } from '../vault/db.ts';
import { MIGRATIONS } from '../vault/migrations.ts';
import { migrationRefusal } from '../vault/migrate.ts';
import { lockKeyText } from '../vault/schema-name.ts';
import { auditExportSignedBy, auditObjectKey } from '../audit/index.ts';
import { pgClientConfig } from '../tls/index.ts';
import { quoteIdent, readVaultCatalog, SESSION_SETTINGS, type CatalogTable } from './catalog.ts';
import {
  HeaderSchema,
  parseVaultBackupKey,
  TableEndSchema,
  TableStartSchema,
  TrailerSchema,
  VaultBackupSignatureSchema,
  vaultBackupSignatureKey,
  vaultBackupSignedMessage,
  type VaultBackupHeader,
} from './format.ts';
import type { VaultTableProgress } from './write.ts';
import { reapplyTombstones, type IgnoredTombstone, type ReappliedDestruction } from './tombstones.ts';

/** Rows per INSERT statement while loading. */
const INSERT_ROWS = 500;
/** A dump line longer than this is not one lethe wrote. */
const MAX_LINE_CHARS = 16 * 1024 * 1024;
/** The meta rows migration 1 seeds; an otherwise empty vault schema holds only these. */
const SEEDED_META_KEYS = ['format_version', 'created_at'];
/** meta key marking a restore whose destructions are still being re-applied. */
const RESTORE_MARK = 'vault_restore';
const AUDIT_OBJECT = /^audit\/(\d{12})\.json$/;

export interface RestoreVaultBackupInput {
  /** The database to restore into (the configured vault database). */
  readonly vaultUrl: string;
  /** The vault schema to restore into: absent, or holding no vault data. */
  readonly schema: string;
  readonly store: ObjectStore;
  /**
   * The master key's identity (AGE-SECRET-KEY-1…), or every master epoch's still held (a
   * vault backup is encrypted to the epoch current when it was written); never logged.
   */
  /** Deferred identities (a KMS key) are prepared from the backup's age header before it is decrypted. */
  readonly masterIdentity: string | readonly (string | FileKeyUnwrapper | DeferredUnwrapper)[];
  /** The vault backup object, `vault/<time>.age`. */
  readonly key: string;
  /** Who restores: the actor of the re-applied destructions and the `vault.restore` entry. */
  readonly actor: string;
  /**
   * The lifecycle signing key from the config. The backup's signature must verify under its
   * public half (or one of `trustedKeys`) before anything is decrypted; it signs the
   * tombstones of re-applied destructions, and is registered in the restored vault.
   */
  readonly signer: Signer;
  /** More public keys (id → base64) a backup may be signed by: an older lifecycle key, after a rotation. */
  readonly trustedKeys?: ReadonlyMap<string, string>;
  /**
   * Replay audit objects that carry no export signature (exported by a lethe from before
   * they were signed). Only for restoring a backup taken before that upgrade; the result
   * counts them.
   */
  readonly allowUnsignedAudit?: boolean;
  readonly signal?: AbortSignal;
  /** Called as rows are loaded. */
  readonly onProgress?: (p: VaultTableProgress) => void;
}

export interface RestoreVaultBackupResult {
  readonly key: string;
  readonly schema: string;
  readonly backupCreatedAt: string;
  /** The backup's vault schema version; the restored vault is migrated to this lethe's. */
  readonly backupSchemaVersion: number;
  readonly schemaVersion: number;
  /** Rows loaded per table. */
  readonly tables: Record<string, number>;
  /** Audit entries copied from the bucket's `audit/` that the backup did not have yet. */
  readonly auditReplayed: number;
  /** The chain position after the restore (its `vault.restore` entry). */
  readonly auditHead: { seq: number; hash: string };
  /** Keys destroyed after the backup was taken, destroyed again now. */
  readonly destructionsReapplied: ReappliedDestruction[];
  /** Tombstones whose key the restored vault already had destroyed. */
  readonly tombstonesAlreadyApplied: number;
  /** Tombstones naming keys the restored vault never had (created after the backup). */
  readonly tombstonesForUnknownKeys: number;
  /** Objects under `destructions/` that are not tombstones lethe signed: reported, never applied. */
  readonly ignoredTombstones: IgnoredTombstone[];
  /** Audit entries replayed although they carried no export signature (allowUnsignedAudit). */
  readonly auditUnsigned: number;
  /** The signing key that signed the backup. */
  readonly signedBy: string;
  /** True when this run finished a restore an earlier run loaded but did not finish. */
  readonly resumed: boolean;
}

/**
 * Restores a vault backup into `schema` of the database at `vaultUrl`, then makes the
 * restored vault catch up with what the bucket knows happened since:
 *
 * 0. Authenticates the backup before using any of it: `<key>.sig` must be signed by the
 *    configured lifecycle key (or a key in `trustedKeys`) and name this backup, and the
 *    backup, copied to a private temporary file, must have the sha256 and size it states.
 *    Everything after reads that verified copy. (A vault backup is encrypted to the master
 *    key's public recipient, so without this anyone who can write to the bucket could make
 *    one, and a restore of it would hand the vault to them.) INTEGRITY, nothing restored.
 * 1. In ONE transaction: refuses a schema that already holds vault data (TARGET_NOT_EMPTY,
 *    naming the fix: a fresh schema or database), creates the schema at the backup's
 *    version, loads every table from the decrypted stream, moves sequences past the loaded
 *    ids, migrates to this lethe's version, and appends the audit entries from the bucket's
 *    `audit/<seq>.json` that follow the backup's last entry, each checked against the chain
 *    (INTEGRITY on a gap, a bad hash or a backup whose chain disagrees with the bucket's).
 *    A corrupt, truncated or wrongly keyed backup (CRYPTO / INTEGRITY) rolls everything back.
 * 2. Registers the lifecycle key in the restored vault, then re-destroys, with lifecycle's
 *    destroyKeys, every key named by a tombstone under `destructions/` that a lifecycle key
 *    of the vault signed and that the restored vault still holds, so an old backup cannot
 *    resurrect a shredded key. Other objects there are reported (`ignoredTombstones`), not
 *    trusted and not a reason to stop: a bucket writer must not be able to block a restore.
 * 3. Appends `vault.restore` to the audit log.
 *
 * A run interrupted after step 1 leaves a marker in meta; running the same restore again
 * skips the load and finishes steps 2 and 3. Refuses (VAULT) a backup of a newer vault
 * schema than this lethe knows. Throws NOT_FOUND for a missing backup object.
 */
export async function restoreVaultBackup(
  input: RestoreVaultBackupInput,
): Promise<RestoreVaultBackupResult> {
  const { key, store, signal } = input;
  const schema = checkSchemaName(input.schema);
  if (parseVaultBackupKey(key) === null) {
    throw new LetheError(
      ErrorCode.USAGE,
      `${JSON.stringify(key)} is not a vault backup key (vault/<YYYYMMDDTHHMMSSmmmZ>.age); list them with \`lethe vault list\``,
    );
  }
  if ((await store.head(key)) === null) {
    throw new LetheError(
      ErrorCode.NOT_FOUND,
      `no vault backup ${key} in ${store.description}; list them with \`lethe vault list\``,
      { details: { key } },
    );
  }

  const trusted = new Map(input.trustedKeys ?? []);
  trusted.set(input.signer.id, input.signer.publicKey);
  const copy = await authenticatedCopy(store, key, trusted, signal);
  let loaded: Loaded;
  try {
    const client = new pg.Client(pgClientConfig(input.vaultUrl, { application_name: 'lethe' }));
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (err) {
      throw wrapForeign(
        ErrorCode.DATABASE,
        `restoring ${key}: connecting to the vault database`,
        err,
      );
    }
    try {
      loaded = await loadInTransaction(client, schema, input, copy, trusted);
    } finally {
      await client.end().catch(() => undefined);
    }
  } finally {
    await rm(copy.dir, { recursive: true, force: true });
  }

  const pool = guardPool(new pg.Pool(pgClientConfig(input.vaultUrl, { max: 2, application_name: 'lethe' })));
  const vault = new Vault(pool, schema);
  try {
    throwIfAborted(signal, `restoring ${key}`);
    await vault.registerSigningKey({ id: input.signer.id, purpose: 'lifecycle', publicKey: input.signer.publicKey });
    const tombstones = await reapplyTombstones(vault, store, { key, actor: input.actor, signer: input.signer });
    const entry = await vault.appendAudit({
      actor: input.actor,
      action: 'vault.restore',
      subject: key,
      details: {
        schema,
        backupCreatedAt: loaded.header.createdAt,
        backupSchemaVersion: loaded.header.schemaVersion,
        tables: loaded.tables,
        auditReplayed: loaded.auditReplayed,
        auditUnsigned: loaded.auditUnsigned,
        resumed: loaded.resumed,
        signedBy: copy.signedBy,
        destructionsReapplied: tombstones.reapplied.map((d) => d.keyId),
        tombstonesAlreadyApplied: tombstones.alreadyApplied,
        tombstonesForUnknownKeys: tombstones.unknownKeys,
        ignoredTombstones: tombstones.ignored.map((t) => t.key),
      },
    });
    await query(
      pool,
      'marking the vault restore finished',
      `DELETE FROM ${quoteIdent(schema)}.meta WHERE key = $1`,
      [RESTORE_MARK],
    );
    return {
      key,
      schema,
      backupCreatedAt: loaded.header.createdAt,
      backupSchemaVersion: loaded.header.schemaVersion,
      schemaVersion: VAULT_SCHEMA_VERSION,
      tables: loaded.tables,
      auditReplayed: loaded.auditReplayed,
      auditHead: { seq: entry.seq, hash: entry.hash },
      destructionsReapplied: tombstones.reapplied,
      tombstonesAlreadyApplied: tombstones.alreadyApplied,
      tombstonesForUnknownKeys: tombstones.unknownKeys,
      ignoredTombstones: tombstones.ignored,
      auditUnsigned: loaded.auditUnsigned,
      signedBy: copy.signedBy,
      resumed: loaded.resumed,
    };
  } finally {
    await vault.close();
    await pool.end().catch(() => undefined);
  }
}

interface Loaded {
  readonly header: VaultBackupHeader;
  readonly tables: Record<string, number>;
  readonly auditReplayed: number;
  readonly auditUnsigned: number;
  readonly resumed: boolean;
}

const MarkSchema = z.object({
  from: z.string(),
  header: HeaderSchema,
  tables: z.record(z.string(), z.number()),
  auditReplayed: z.number(),
  auditUnsigned: z.number().default(0),
});

/** A verified local copy of a vault backup. */
interface AuthenticatedCopy {
  readonly dir: string;
  readonly path: string;
  readonly signedBy: string;
  /** The vault schema version the signature states; the dump's header must say the same. */
  readonly schemaVersion: number;
}

/**
 * Checks `<key>.sig` (format, names this backup, Ed25519 by a key in `trusted`), then copies
 * the backup to a new private directory while hashing it and checks its sha256 and size
 * against the signed statement. Throws INTEGRITY naming what failed; NOT_FOUND / STORAGE as
 * the store raises them. The caller removes `dir`.
 */
async function authenticatedCopy(
  store: ObjectStore,
  key: string,
  trusted: ReadonlyMap<string, string>,
  signal: AbortSignal | undefined,
): Promise<AuthenticatedCopy> {
  const refuse = (why: string): LetheError =>
    new LetheError(
      ErrorCode.INTEGRITY,
      `vault backup ${key} cannot be trusted, so nothing was restored: ${why}. Restore another vault backup (\`lethe vault list\`)`,
      { details: { key } },
    );
  const signatureKey = vaultBackupSignatureKey(key);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(await store.getBytes(signatureKey, signal === undefined ? {} : { signal })).toString('utf8'));
  } catch (err) {
    if (isLetheErrorCode(err, ErrorCode.NOT_FOUND)) throw refuse(`it has no signature (${signatureKey}): lethe did not finish writing it, or the signature was removed`);
    if (err instanceof SyntaxError) throw refuse(`${signatureKey} is not JSON`);
    throw err;
  }
  const parsed = VaultBackupSignatureSchema.safeParse(raw);
  if (!parsed.success) throw refuse(`${signatureKey} is not a vault backup signature`);
  const { signature, ...body } = parsed.data;
  if (body.backup !== key) throw refuse(`${signatureKey} signs ${body.backup}, not this backup`);
  const publicKey = trusted.get(signature.keyId);
  if (publicKey === undefined) {
    throw refuse(`it is signed by key ${signature.keyId}, which is not the configured lifecycle signing key (after a rotation, pass the old key's public half with --trust-key)`);
  }
  if (!verifySignature(publicKey, vaultBackupSignedMessage(body), signature.value)) throw refuse('its signature does not verify');
  const dir = await mkdtemp(join(tmpdir(), 'lethe-vault-restore-'));
  const path = join(dir, 'backup.age');
  try {
    const hash = createHash('sha256');
    let size = 0;
    const handle = await open(path, 'wx', 0o600);
    try {
      for await (const chunk of await store.get(key, signal === undefined ? {} : { signal })) {
        hash.update(chunk);
        size += chunk.length;
        await handle.write(chunk);
      }
    } finally {
      await handle.close();
    }
    const sha256 = hash.digest('hex');
    if (!equalConstantTime(sha256, body.sha256) || size !== body.size) {
      throw refuse(`its content (sha256 ${sha256}, ${size} bytes) is not what was signed (sha256 ${body.sha256}, ${body.size} bytes)`);
    }
    return { dir, path, signedBy: signature.keyId, schemaVersion: body.schemaVersion };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function isLetheErrorCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof LetheError && err.code === code;
}

async function loadInTransaction(
  client: pg.Client,
  schema: string,
  input: RestoreVaultBackupInput,
  localCopy: AuthenticatedCopy,
  trusted: ReadonlyMap<string, string>,
): Promise<Loaded> {
  const doing = `restoring vault backup ${input.key} into schema "${schema}"`;
  await query(client, doing, 'BEGIN');
  try {
    // The lock `lethe init` (migrateVault) takes: an init racing the restore waits for it.
    await query(client, doing, 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
      lockKeyText(schema, 'migrate'),
    ]);
    // The dump's values are PostgreSQL text forms written under these settings.
    await query(client, doing, SESSION_SETTINGS);
    const state = await targetState(client, schema, doing);
    if (state.mark !== null) {
      const mark = MarkSchema.safeParse(state.mark);
      if (mark.success && mark.data.from === input.key) {
        await query(client, doing, 'COMMIT');
        return { ...mark.data, resumed: true };
      }
    }
    if (state.tablesWithData.length > 0) {
      throw new LetheError(
        ErrorCode.TARGET_NOT_EMPTY,
        `the vault schema "${schema}" in this database already holds vault data (${state.tablesWithData.join(', ')}); ` +
          'a vault backup is restored only into an empty one: set `vault.schema` to a fresh schema name, or point ' +
          '`vault.database` at a new, empty database, then run the restore again',
        { details: { schema, tablesWithData: state.tablesWithData } },
      );
    }
    const loaded = await loadStream(client, schema, state.version, input, localCopy, doing);
    const audit = await replayAudit(client, schema, input.store, trusted, input.allowUnsignedAudit === true, input.signal);
    const mark = { from: input.key, header: loaded.header, tables: loaded.tables, auditReplayed: audit.replayed, auditUnsigned: audit.unsigned };
    await query(
      client,
      doing,
      `INSERT INTO ${quoteIdent(schema)}.meta (key, value) VALUES ($1, $2::jsonb)
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
      [RESTORE_MARK, JSON.stringify(mark)],
    );
    await query(client, doing, 'COMMIT');
    return { ...mark, resumed: false };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw wrapForeign(ErrorCode.DATABASE, doing, err);
  }
}

interface TargetState {
  /** Highest applied migration, 0 when the schema or its migrations table is absent. */
  readonly version: number;
  readonly tablesWithData: string[];
  /** The unfinished-restore marker, if a previous run left one. */
  readonly mark: unknown;
}

async function targetState(client: pg.Client, schema: string, doing: string): Promise<TargetState> {
  const s = quoteIdent(schema);
  const present = await query<{ migrations: boolean }>(
    client,
    doing,
    'SELECT to_regclass($1) IS NOT NULL AS migrations',
    [`${s}.migrations`],
  );
  let version = 0;
  if (present.rows[0]?.migrations === true) {
    const { rows } = await query<{ version: number | null }>(
      client,
      doing,
      `SELECT max(version) AS version FROM ${s}.migrations`,
    );
    version = rows[0]?.version ?? 0;
  }
  const tablesWithData: string[] = [];
  let mark: unknown = null;
  for (const table of await readVaultCatalog(client, schema)) {
    const where = table.name === 'meta' ? 'WHERE key <> ALL($1::text[])' : '';
    const { rows } = await query<{ any: boolean }>(
      client,
      doing,
      `SELECT EXISTS (SELECT 1 FROM ${s}.${quoteIdent(table.name)} ${where}) AS any`,
      table.name === 'meta' ? [SEEDED_META_KEYS] : [],
    );
    if (rows[0]?.any === true) tablesWithData.push(table.name);
    if (table.name === 'meta') {
      const marked = await query<{ value: unknown }>(
        client,
        doing,
        `SELECT value FROM ${s}.meta WHERE key = $1`,
        [RESTORE_MARK],
      );
      mark = marked.rows[0]?.value ?? null;
    }
  }
  return { version, tablesWithData, mark };
}

/** Creates the migrations table and applies migrations above `from` up to `to`. */
async function migrateTo(
  client: pg.Client,
  schema: string,
  from: number,
  to: number,
  doing: string,
): Promise<void> {
  const s = quoteIdent(schema);
  await query(client, doing, `CREATE SCHEMA IF NOT EXISTS ${s}`);
  await query(
    client,
    doing,
    `CREATE TABLE IF NOT EXISTS ${s}.migrations (
       version    integer PRIMARY KEY,
       name       text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  await query(client, doing, `SET LOCAL search_path TO ${s}`);
  for (const migration of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
    if (migration.version <= from || migration.version > to) continue;
    try {
      await client.query(migration.sql);
    } catch (err) {
      // A vault backup of a format this lethe refuses: the migration says why and what to do.
      throw migrationRefusal(err, schema, migration.version) ?? wrapForeign(ErrorCode.DATABASE, `${doing}: migration ${migration.version} (${migration.name})`, err);
    }
    await query(client, doing, `INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [
      migration.version,
      migration.name,
    ]);
  }
  await query(client, doing, 'SET LOCAL search_path TO DEFAULT');
}

function corrupt(key: string, what: string): LetheError {
  return new LetheError(
    ErrorCode.INTEGRITY,
    `vault backup ${key} is not a complete lethe vault backup: ${what}; nothing was restored. ` +
      'Restore an older vault backup (`lethe vault list`)',
    { details: { key } },
  );
}

/** The decrypted dump as lines; refuses absurdly long ones. */
async function* lines(source: AsyncIterable<Uint8Array>, key: string): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let buffered = '';
  for await (const chunk of source) {
    let text: string;
    try {
      text = decoder.decode(chunk, { stream: true });
    } catch {
      throw corrupt(key, 'its content is not UTF-8');
    }
    buffered += text;
    let from = 0;
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n', from)) {
      yield buffered.slice(from, at);
      from = at + 1;
    }
    buffered = buffered.slice(from);
    if (buffered.length > MAX_LINE_CHARS)
      throw corrupt(key, 'a line is longer than any lethe writes');
  }
  if (buffered !== '') yield buffered;
}

function parseLine(line: string, key: string, lineNo: number): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    throw corrupt(key, `line ${lineNo} is not JSON`);
  }
}

/** Loads the dump; returns its header and rows per table. */
async function loadStream(
  client: pg.Client,
  schema: string,
  targetVersion: number,
  input: RestoreVaultBackupInput,
  localCopy: AuthenticatedCopy,
  doing: string,
): Promise<{ header: VaultBackupHeader; tables: Record<string, number> }> {
  const { key, signal } = input;
  // age unwraps synchronously: an identity whose key agreement is a KMS call reads the header first.
  const identities = await resolveIdentities(typeof input.masterIdentity === 'string' ? [input.masterIdentity] : input.masterIdentity, () => readAgeHeaderStanzas(localCopy.path));
  const decrypted = decryptStream(createReadStream(localCopy.path), identities, { signal });
  const iterator = lines(decrypted, key)[Symbol.asyncIterator]();
  let lineNo = 0;
  const next = async (): Promise<unknown> => {
    const r = await iterator.next();
    if (r.done === true) throw corrupt(key, 'it ends before its trailer (truncated?)');
    lineNo += 1;
    return parseLine(r.value, key, lineNo);
  };
  try {
    const parsedHeader = HeaderSchema.safeParse(await next());
    if (!parsedHeader.success)
      throw corrupt(key, 'its first line is not a lethe.vault-backup.v1 header');
    const header = parsedHeader.data;
    if (header.schemaVersion !== localCopy.schemaVersion) {
      throw corrupt(key, `its header says vault schema version ${header.schemaVersion}, its signature ${localCopy.schemaVersion}`);
    }
    if (header.schemaVersion > VAULT_SCHEMA_VERSION) {
      throw new LetheError(
        ErrorCode.VAULT,
        `vault backup ${key} is of vault schema version ${header.schemaVersion}, newer than this lethe ` +
          `understands (${VAULT_SCHEMA_VERSION}): restore it with a lethe at least as new as the one that wrote it`,
      );
    }
    if (targetVersion > header.schemaVersion) {
      throw new LetheError(
        ErrorCode.TARGET_NOT_EMPTY,
        `the vault schema "${schema}" is already at version ${targetVersion} (empty, but created by \`lethe init\`), ` +
          `and the backup is of version ${header.schemaVersion}: restore into a schema that does not exist yet ` +
          `(\`DROP SCHEMA "${schema}" CASCADE\` if it holds nothing else, or set \`vault.schema\` to a new name)`,
      );
    }
    await migrateTo(client, schema, targetVersion, header.schemaVersion, doing);
    const target = await readVaultCatalog(client, schema);
    checkTablesMatch(header, target, key);
    const s = quoteIdent(schema);
    // Migration 1 seeds meta; the backup's own rows replace those.
    await query(client, doing, `DELETE FROM ${s}.meta`);

    const tables: Record<string, number> = {};
    let rowsSoFar = 0;
    for (const table of target) {
      throwIfAborted(signal, doing);
      const start = TableStartSchema.safeParse(await next());
      if (!start.success || start.data.table !== table.name) {
        throw corrupt(key, `line ${lineNo} should start table ${table.name}`);
      }
      const order =
        header.tables.find((t) => t.name === table.name)?.columns.map((c) => c.name) ?? [];
      const columns = order.map(
        (name) => table.columns.find((c) => c.name === name) ?? { name, type: 'text' },
      );
      const insert = new BatchInsert(client, `${s}.${quoteIdent(table.name)}`, columns, doing);
      let rows = 0;
      for (;;) {
        const value = await next();
        if (Array.isArray(value)) {
          if (
            value.length !== columns.length ||
            !value.every((v) => v === null || typeof v === 'string')
          ) {
            throw corrupt(key, `line ${lineNo} is not a row of ${table.name}`);
          }
          await insert.add(value as (string | null)[]);
          rows += 1;
          rowsSoFar += 1;
          if (rowsSoFar % 500 === 0) input.onProgress?.({ table: table.name, tablesDone: Object.keys(tables).length, tables: target.length, rows: rowsSoFar });
          continue;
        }
        const end = TableEndSchema.safeParse(value);
        if (!end.success || end.data.tableEnd !== table.name || end.data.rows !== rows) {
          throw corrupt(key, `line ${lineNo} should end table ${table.name} after ${rows} rows`);
        }
        break;
      }
      await insert.flush();
      tables[table.name] = rows;
    }
    const trailer = TrailerSchema.safeParse(await next());
    if (!trailer.success || canonicalJson(trailer.data.rows) !== canonicalJson(tables)) {
      throw corrupt(key, `line ${lineNo} is not the trailer its tables add up to`);
    }
    if (!(await iterator.next()).done) throw corrupt(key, 'there is data after its trailer');
    await setSequences(client, schema, target, doing);
    await migrateTo(client, schema, header.schemaVersion, VAULT_SCHEMA_VERSION, doing);
    return { header, tables };
  } finally {
    await iterator.return(undefined);
  }
}

function checkTablesMatch(
  header: VaultBackupHeader,
  target: readonly CatalogTable[],
  key: string,
): void {
  const describe = (columns: readonly { name: string; type: string }[]) =>
    columns
      .map((c) => `${c.name} ${c.type}`)
      .sort()
      .join(', ');
  const want = new Map(target.map((t) => [t.name, describe(t.columns)]));
  const got = new Map(header.tables.map((t) => [t.name, describe(t.columns)]));
  const names = [...new Set([...want.keys(), ...got.keys()])].sort();
  const differ = names.filter((n) => want.get(n) !== got.get(n));
  if (
    differ.length > 0 ||
    header.tables.map((t) => t.name).join() !== target.map((t) => t.name).join()
  ) {
    throw corrupt(
      key,
      `its tables do not match vault schema version ${header.schemaVersion} (${differ.join(', ') || 'table order'})`,
    );
  }
}

/** Multi-row INSERTs of text values cast to each column's type (bytea from base64). */
class BatchInsert {
  readonly #rows: (string | null)[][] = [];

  constructor(
    private readonly client: pg.Client,
    private readonly table: string,
    private readonly columns: readonly { name: string; type: string }[],
    private readonly doing: string,
  ) {}

  async add(row: (string | null)[]): Promise<void> {
    this.#rows.push(row);
    if (this.#rows.length >= INSERT_ROWS) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#rows.length === 0) return;
    const width = this.columns.length;
    const casts = this.columns.map((c, i) =>
      c.type === 'bytea'
        ? (n: number) => `decode($${n + i}, 'base64')`
        : (n: number) => `$${n + i}::text::${c.type}`,
    );
    const tuples = this.#rows.map(
      (_, r) => `(${casts.map((cast) => cast(r * width + 1)).join(', ')})`,
    );
    await query(
      this.client,
      `${this.doing}: loading ${this.table}`,
      `INSERT INTO ${this.table} (${this.columns.map((c) => quoteIdent(c.name)).join(', ')}) VALUES ${tuples.join(', ')}`,
      this.#rows.flat(),
    );
    this.#rows.length = 0;
  }
}

/** Moves each bigserial's sequence past the highest id loaded (or back to 1 when empty). */
async function setSequences(
  client: pg.Client,
  schema: string,
  tables: readonly CatalogTable[],
  doing: string,
) {
  for (const table of tables) {
    for (const { column, sequence } of table.sequences) {
      const col = quoteIdent(column);
      await query(
        client,
        doing,
        `SELECT setval($1::regclass, COALESCE(max(${col}), 1), max(${col}) IS NOT NULL)
           FROM ${quoteIdent(schema)}.${quoteIdent(table.name)}`,
        [sequence],
      );
    }
  }
}

const AuditObjectSchema = z.strictObject({
  seq: z.number().int().positive(),
  at: z.iso.datetime(),
  actor: z.string(),
  action: z.string(),
  subject: z.string(),
  details: z.record(z.string(), z.unknown()),
  prevHash: z.string().regex(/^[0-9a-f]{64}$/),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  exportSignature: z.strictObject({ keyId: z.string().min(1), value: z.string().min(1) }).optional(),
});

type AuditObject = AuditEntry & { readonly exportSignature?: { keyId: string; value: string } | undefined };

async function readAuditObject(
  store: ObjectStore,
  key: string,
  signal: AbortSignal | undefined,
): Promise<AuditObject> {
  const bytes = await store.getBytes(key, signal === undefined ? {} : { signal });
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    raw = undefined;
  }
  const parsed = AuditObjectSchema.safeParse(raw);
  if (!parsed.success || new Date(parsed.data.at).toISOString() !== parsed.data.at) {
    throw new LetheError(
      ErrorCode.INTEGRITY,
      `audit object ${key} is not an audit entry lethe wrote; nothing was restored`,
    );
  }
  return {
    ...parsed.data,
    at: new Date(parsed.data.at),
    details: parsed.data.details as JsonObject,
  };
}

/**
 * Appends the entries the bucket has after the restored log's last one, so the chain goes on
 * where the bucket's copy ends. Each must follow its predecessor (seq, prevHash) and carry
 * its own hash; the bucket's copy of the restored head, when present, must match it.
 * Returns how many were appended; records them as exported.
 */
async function replayAudit(
  client: pg.Client,
  schema: string,
  store: ObjectStore,
  configured: ReadonlyMap<string, string>,
  allowUnsigned: boolean,
  signal: AbortSignal | undefined,
): Promise<{ replayed: number; unsigned: number }> {
  const s = quoteIdent(schema);
  const doing = 'continuing the restored audit log from the bucket';
  // Entries are exported by backup and lifecycle jobs: trust their keys as the restored vault
  // lists them, and the keys the operator vouched for.
  const trusted = new Map(configured);
  const keys = await query<{ id: string; public_key: string }>(client, doing, `SELECT id, public_key FROM ${s}.signing_keys`);
  for (const row of keys.rows) trusted.set(row.id, row.public_key);
  let unsigned = 0;
  const { rows } = await query<{ seq: string; hash: string }>(
    client,
    doing,
    `SELECT seq, hash FROM ${s}.audit_log ORDER BY seq DESC LIMIT 1`,
  );
  const head =
    rows[0] === undefined
      ? { seq: 0, hash: GENESIS_HASH }
      : { seq: Number(rows[0].seq), hash: rows[0].hash };
  const later: number[] = [];
  // The bucket's newest entry the restored log also has: the two must agree there.
  let anchor = 0;
  for await (const object of store.list('audit/')) {
    const m = AUDIT_OBJECT.exec(object.key);
    if (m?.[1] === undefined) continue;
    const seq = Number(m[1]);
    if (seq > head.seq) later.push(seq);
    else anchor = Math.max(anchor, seq);
  }
  if (anchor > 0) {
    const copy = await readAuditObject(store, auditObjectKey(anchor), signal);
    const mine = await query<{ hash: string }>(
      client,
      doing,
      `SELECT hash FROM ${s}.audit_log WHERE seq = $1`,
      [anchor],
    );
    if (copy.hash !== mine.rows[0]?.hash) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `the vault backup's audit entry ${anchor} differs from the bucket's copy (${auditObjectKey(anchor)}): ` +
          'the backup does not belong to this bucket, or one of them was altered; nothing was restored',
      );
    }
  }
  later.sort((a, b) => a - b);
  let prev = head;
  for (const seq of later) {
    throwIfAborted(signal, doing);
    const objectKey = auditObjectKey(seq);
    if (seq !== prev.seq + 1) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `the bucket's audit chain has no entry ${prev.seq + 1} (next is ${objectKey}), so the restored log cannot ` +
          'continue it; nothing was restored',
      );
    }
    const entry = await readAuditObject(store, objectKey, signal);
    if (entry.seq !== seq || entry.prevHash !== prev.hash || auditEntryHash(entry) !== entry.hash) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `audit object ${objectKey} does not continue the chain (seq, prev_hash or hash wrong); nothing was restored`,
      );
    }
    if (entry.exportSignature === undefined) {
      if (!allowUnsigned) {
        throw new LetheError(
          ErrorCode.INTEGRITY,
          `audit object ${objectKey} carries no export signature, so it cannot be told from one anybody with write ` +
            'access to the bucket could have added; nothing was restored. If it was exported by a lethe from before audit ' +
            'objects were signed, restore with --allow-unsigned-audit',
        );
      }
      unsigned += 1;
    } else if (!auditExportSignedBy(entry, entry.exportSignature, trusted)) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `audit object ${objectKey} is not signed by a backup or lifecycle key of this vault (key ${entry.exportSignature.keyId}); nothing was restored`,
      );
    }
    const stored = await query<{ details: unknown }>(
      client,
      doing,
      `INSERT INTO ${s}.audit_log (seq, at, actor, action, subject, details, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING details`,
      [
        entry.seq,
        entry.at,
        entry.actor,
        entry.action,
        entry.subject,
        canonicalJson(entry.details),
        entry.prevHash,
        entry.hash,
      ],
    );
    if (canonicalJson(stored.rows[0]?.details) !== canonicalJson(entry.details)) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `audit object ${objectKey}: its details do not survive storage as jsonb`,
      );
    }
    prev = { seq, hash: entry.hash };
  }
  // Entries the bucket already has are not exported again (a locked copy could not be replaced).
  const exported = Math.max(anchor, later.length > 0 ? prev.seq : 0);
  if (exported > 0) {
    await query(
      client,
      doing,
      `INSERT INTO ${s}.meta AS m (key, value) VALUES ('audit_exported_seq', to_jsonb($1::bigint))
       ON CONFLICT (key) DO UPDATE SET value = to_jsonb(GREATEST((m.value #>> '{}')::bigint, $1::bigint))`,
      [exported],
    );
  }
  return { replayed: later.length, unsigned };
}
