import { encryptStream } from '../crypto/index.ts';
import { ErrorCode, LetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import { VAULT_SCHEMA_VERSION, type Vault } from '../vault/index.ts';
import { query, type Queryable } from '../vault/db.ts';
import {
  quoteIdent,
  readVaultCatalog,
  rowOrder,
  SESSION_SETTINGS,
  type CatalogTable,
} from './catalog.ts';
import type { Signer } from '../keys/index.ts';
import {
  VAULT_BACKUP_FORMAT,
  VAULT_BACKUP_SIGNATURE_FORMAT,
  vaultBackupKey,
  vaultBackupSignatureKey,
  vaultBackupSignedMessage,
  type VaultBackupHeader,
  type VaultBackupSignature,
} from './format.ts';

const DAY_MS = 86_400_000;
/** Rows per FETCH: bounded memory whatever the table size (a row is at most a few KB). */
const FETCH_ROWS = 500;
/** Plaintext is handed to age in pieces of about this size. */
const FLUSH_BYTES = 64 * 1024;

export interface WriteVaultBackupInput {
  readonly vault: Vault;
  readonly store: ObjectStore;
  /** The master key's age recipient (public): the backup opens only with the master identity. */
  readonly masterRecipient: string;
  /** The lifecycle signing key: it signs `<key>.sig`, which a restore checks before decrypting. */
  readonly signer: Signer;
  /** Days the backup is locked for when `lockMode` is given (the grace window). */
  readonly graceWindowDays: number;
  /** The configured `storage.objectLock.mode`; absent: the object is written without a lock. */
  readonly lockMode?: ObjectLock['mode'];
  /** The backup's creation time: names the object and starts its lock. */
  readonly now: Date;
  /** When given, a `vault.backup` audit entry by this actor follows the upload. */
  readonly actor?: string;
  readonly signal?: AbortSignal;
  /** Called as rows are dumped (a page at a time). */
  readonly onProgress?: (p: VaultTableProgress) => void;
}

/** How far a vault dump or load has got: the table at hand, tables finished of all, rows so far. */
export interface VaultTableProgress {
  readonly table: string;
  readonly tablesDone: number;
  readonly tables: number;
  readonly rows: number;
}

export interface VaultBackupResult {
  /** `vault/<YYYYMMDDTHHMMSSmmmZ>.age`. */
  readonly key: string;
  /** `<key>.sig`, its signature. */
  readonly signatureKey: string;
  /** Bytes of the age file. */
  readonly size: number;
  /** sha256 (hex) of the age file as stored. */
  readonly sha256: string;
  readonly createdAt: Date;
  readonly schemaVersion: number;
  /** Rows dumped per table. */
  readonly tables: Record<string, number>;
  /** Retain-until of the object lock, or null without one. */
  readonly retainUntil: Date | null;
}

/**
 * Backs the whole vault up into the bucket as `vault/<time>.age`: an age v1 file encrypted to
 * `masterRecipient`, whose plaintext is the NDJSON dump described in format.ts. Every table
 * is read in one REPEATABLE READ transaction (a consistent instant) through a cursor, and the
 * dump streams through age into the store: memory stays bounded by a page of rows and one
 * age chunk, whatever the vault's size. With `lockMode` the object is locked until
 * `now + graceWindowDays`, the grace window after which a destroyed key is gone from every
 * vault backup.
 *
 * The object appears only complete (ObjectStore.put); then `<key>.sig` is stored, signed with
 * the lifecycle key. A backup without its signature (a crash in between) is never restored;
 * lifecycle deletes it with the others after the grace window. Both objects are recorded in
 * the vault as lethe's before they are uploaded. Throws DATABASE, STORAGE, KEY (bad
 * recipient), ABORTED.
 */
export async function writeVaultBackup(input: WriteVaultBackupInput): Promise<VaultBackupResult> {
  const { vault, store, now, signal } = input;
  if (!Number.isSafeInteger(input.graceWindowDays) || input.graceWindowDays < 1) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `vault backup: graceWindowDays must be a positive whole number of days, got ${String(input.graceWindowDays)}`,
    );
  }
  const key = vaultBackupKey(now);
  const lock: ObjectLock | undefined =
    input.lockMode === undefined
      ? undefined
      : {
          mode: input.lockMode,
          retainUntil: new Date(now.getTime() + input.graceWindowDays * DAY_MS),
        };
  throwIfAborted(signal, `writing vault backup ${key}`);
  const signatureKey = vaultBackupSignatureKey(key);
  await vault.recordStoreObjects(store.description, [
    { key, kind: 'vault-backup', snapshotId: null },
    { key: signatureKey, kind: 'vault-backup', snapshotId: null },
  ]);
  const tables: Record<string, number> = {};
  const { size, sha256 } = await vault.withReadSnapshot(async (client) => {
    await query(client, `writing vault backup ${key}`, SESSION_SETTINGS);
    const catalog = await readVaultCatalog(client, vault.schema);
    const header: VaultBackupHeader = {
      format: VAULT_BACKUP_FORMAT,
      schemaVersion: await schemaVersion(client, vault.schema),
      createdAt: now.toISOString(),
      schema: vault.schema,
      tables: catalog.map((t) => ({ name: t.name, columns: t.columns })),
    };
    const plain = dumpLines(client, vault.schema, header, catalog, tables, signal, input.onProgress);
    const encrypted = encryptStream(plain, [input.masterRecipient], { signal });
    return store.put(key, encrypted, {
      ...(lock === undefined ? {} : { lock }),
      ...(signal === undefined ? {} : { signal }),
    });
  });
  const body: Omit<VaultBackupSignature, 'signature'> = {
    format: VAULT_BACKUP_SIGNATURE_FORMAT,
    backup: key,
    sha256,
    size,
    createdAt: now.toISOString(),
    schemaVersion: VAULT_SCHEMA_VERSION,
  };
  const signed: VaultBackupSignature = {
    ...body,
    signature: { keyId: input.signer.id, value: input.signer.sign(vaultBackupSignedMessage(body)) },
  };
  await store.put(signatureKey, new TextEncoder().encode(`${JSON.stringify(signed)}\n`), {
    ...(lock === undefined ? {} : { lock }),
    ...(signal === undefined ? {} : { signal }),
  });
  const result: VaultBackupResult = {
    key,
    signatureKey,
    size,
    sha256,
    createdAt: now,
    schemaVersion: VAULT_SCHEMA_VERSION,
    tables,
    retainUntil: lock?.retainUntil ?? null,
  };
  if (input.actor !== undefined) {
    await vault.appendAudit({
      actor: input.actor,
      action: 'vault.backup',
      subject: key,
      details: {
        size,
        sha256,
        schemaVersion: result.schemaVersion,
        tables,
        retainUntil: result.retainUntil?.toISOString() ?? null,
      },
    });
  }
  return result;
}

async function schemaVersion(client: Queryable, schema: string): Promise<number> {
  const { rows } = await query<{ version: number | null }>(
    client,
    'reading the vault schema version',
    `SELECT max(version) AS version FROM ${quoteIdent(schema)}.migrations`,
  );
  const version = rows[0]?.version ?? null;
  if (version !== VAULT_SCHEMA_VERSION) {
    throw new LetheError(
      ErrorCode.VAULT,
      `the vault schema "${schema}" is at version ${String(version)}, this lethe writes backups of version ` +
        `${VAULT_SCHEMA_VERSION}: run \`lethe init\` (older) or upgrade lethe (newer)`,
    );
  }
  return version;
}

/** One column as the text the dump stores: bytea as base64 on one line, the rest as `::text`. */
function selectExpression(column: { name: string; type: string }): string {
  const ident = quoteIdent(column.name);
  return column.type === 'bytea'
    ? `translate(encode(${ident}, 'base64'), E'\\n', '')`
    : `${ident}::text`;
}

/** The NDJSON dump as byte chunks, read through one cursor per table; fills `counts`. */
async function* dumpLines(
  client: Queryable,
  schema: string,
  header: VaultBackupHeader,
  catalog: readonly CatalogTable[],
  counts: Record<string, number>,
  signal: AbortSignal | undefined,
  onProgress?: (p: VaultTableProgress) => void,
): AsyncGenerator<Uint8Array> {
  let rowsSoFar = 0;
  let pending: string[] = [];
  let pendingBytes = 0;
  const take = (): Uint8Array => {
    const out = new Uint8Array(Buffer.from(pending.join(''), 'utf8'));
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const push = (value: unknown): boolean => {
    const line = `${JSON.stringify(value)}\n`;
    pending.push(line);
    pendingBytes += line.length;
    return pendingBytes >= FLUSH_BYTES;
  };

  push(header);
  for (const table of catalog) {
    throwIfAborted(signal, `dumping vault table ${table.name}`);
    const doing = `dumping vault table ${table.name}`;
    const cursor = `lethe_vault_backup_${table.name}`;
    const order = rowOrder(table).map(quoteIdent).join(', ');
    await query(
      client,
      doing,
      `DECLARE ${cursor} NO SCROLL CURSOR FOR
         SELECT ${table.columns.map(selectExpression).join(', ')}
           FROM ${quoteIdent(schema)}.${quoteIdent(table.name)} ORDER BY ${order}`,
    );
    let rows = 0;
    if (push({ table: table.name })) yield take();
    try {
      for (;;) {
        const page = await client
          .query<unknown[]>({
            text: `FETCH ${FETCH_ROWS} FROM ${cursor}`,
            rowMode: 'array',
          })
          .catch((err: unknown) => {
            throw wrapForeign(ErrorCode.DATABASE, doing, err);
          });
        for (const row of page.rows) {
          rows += 1;
          if (push(row)) yield take();
        }
        rowsSoFar += page.rows.length;
        onProgress?.({ table: table.name, tablesDone: Object.keys(counts).length, tables: catalog.length, rows: rowsSoFar });
        if (page.rows.length < FETCH_ROWS) break;
      }
    } finally {
      await client.query(`CLOSE ${cursor}`).catch(() => undefined);
    }
    counts[table.name] = rows;
    if (push({ tableEnd: table.name, rows })) yield take();
  }
  push({ end: true, rows: counts });
  yield take();
}
