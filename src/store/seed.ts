import type pg from 'pg';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { copyRows } from './copy-load.ts';
import {
  emptyDirectory,
  fileBytes,
  fileRow,
  prepareEmptyDirectory,
  seededFiles,
  writeObject,
} from './files.ts';
import { inTransaction, withClient } from './pg-client.ts';
import {
  REFERENCE_KEYS_SQL,
  REFERENCE_TABLES,
  REFERENCE_TABLES_SQL,
  REFERENCE_TYPES,
  type ReferenceTable,
} from './reference-schema.ts';
import {
  attachmentRows,
  COLUMNS,
  conversationRows,
  editRows,
  membershipRows,
  messageRows,
  tenantRows,
  userRows,
} from './rows.ts';
import { SCALE_PARAMS, SCALES, type Scale } from './scale.ts';
import { buildWorld } from './world.ts';

/** The seed used when none is given. */
export const DEFAULT_SEED = 1;

export interface SeedOptions {
  readonly scale: Scale;
  /** Non-negative safe integer; default {@link DEFAULT_SEED}. */
  readonly seed?: number;
  /**
   * The chat service's object store for table `files`: a directory, created if missing,
   * that must be empty. The seeder writes every file's bytes there under its object key.
   */
  readonly filesDir: string;
  readonly signal?: AbortSignal;
  /** Called as files are written (table `files`, before its rows) and as rows stream into each table. */
  /** Rows sent so far of `table` (the `tablesDone + 1`-th of `tables`), and of all tables (`rowsAll`). */
  readonly onProgress?: (progress: { table: ReferenceTable; rows: number; rowsAll: number; tablesDone: number; tables: number }) => void;
}

export interface SeedStats {
  readonly scale: Scale;
  readonly seed: number;
  /** Rows loaded per table. */
  readonly rows: Readonly<Record<ReferenceTable, number>>;
  /** Growth of pg_database_size over the run: tables, TOAST and indexes. */
  readonly bytes: number;
  /** The files written to {@link SeedOptions.filesDir}: one per `files` row, and their bytes. */
  readonly files: { readonly dir: string; readonly count: number; readonly bytes: number };
  readonly durationMs: number;
}

/**
 * Creates the reference schema in `url`'s database (schema `public`) and fills it with a
 * deterministic chat history: the same (scale, seed) always yields byte-identical table
 * contents, independent of the wall clock (history ends at REFERENCE_END).
 *
 * The bytes of table `files` go to `filesDir` first (a chat service writes the object before
 * the row that points at it). Then everything in the database happens in one transaction —
 * types, tables, COPY of every table, then keys, foreign keys and indexes — so a failure or
 * an abort leaves the database as it was, and the seeder empties `filesDir` again. Rows
 * stream through COPY FROM STDIN in chunks and files are written one at a time; memory
 * stays bounded at every scale.
 *
 * Throws TARGET_NOT_EMPTY (nothing written) when any reference table or type already
 * exists or `filesDir` is not empty, USAGE for a bad scale or seed, ABORTED when `signal`
 * fires, STORAGE when a file cannot be written, DATABASE otherwise.
 */
export async function seedChatStore(url: string, options: SeedOptions): Promise<SeedStats> {
  const started = performance.now();
  const { scale, signal, onProgress } = options;
  const seed = options.seed ?? DEFAULT_SEED;
  if (!SCALES.includes(scale)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `unknown seed scale ${JSON.stringify(scale)}: use one of ${SCALES.join(', ')}`,
    );
  }
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new LetheError(
      ErrorCode.USAGE,
      `seed must be a non-negative integer, got ${String(seed)}`,
    );
  }
  const params = SCALE_PARAMS[scale];
  return withClient(
    url,
    `seeding the reference chat store (${scale}, seed ${seed})`,
    async (client) => {
      await refuseExisting(client);
      await prepareEmptyDirectory(options.filesDir);
      const before = await databaseSize(client);
      const world = buildWorld(params, seed);
      const rows: Record<ReferenceTable, number> = {
        tenants: 0,
        users: 0,
        conversations: 0,
        memberships: 0,
        messages: 0,
        message_edits: 0,
        attachments: 0,
        files: 0,
      };
      let tablesDone = 0;
      let rowsDone = 0;
      const load = async (table: ReferenceTable, lines: Iterable<string>): Promise<void> => {
        throwIfAborted(signal, 'seeding the reference chat store');
        rows[table] = await copyRows(client, `public.${table}`, COLUMNS[table], lines, {
          signal,
          onProgress: onProgress && ((n) => onProgress({ table, rows: n, rowsAll: rowsDone + n, tablesDone, tables: REFERENCE_TABLES.length })),
        });
        tablesDone += 1;
        rowsDone += rows[table];
      };
      const files = { dir: options.filesDir, count: 0, bytes: 0 };
      try {
        for (const file of seededFiles(world, params, seed)) {
          throwIfAborted(signal, 'seeding the reference chat store');
          await writeObject(options.filesDir, file.objectKey, fileBytes(seed, file));
          files.count += 1;
          files.bytes += file.byteSize;
          if (onProgress && files.count % 50 === 0) {
            onProgress({
              table: 'files',
              rows: files.count,
              rowsAll: 0,
              tablesDone: 0,
              tables: REFERENCE_TABLES.length,
            });
          }
        }
        await inTransaction(client, async () => {
          await client.query(REFERENCE_TABLES_SQL);
          await load('tenants', tenantRows(world));
          await load('users', userRows(world));
          await load('conversations', conversationRows(world));
          await load('memberships', membershipRows(world));
          await load('messages', messageRows(world, params, seed));
          await load('message_edits', editRows(world, params, seed));
          await load('attachments', attachmentRows(world, params, seed));
          await load('files', map(seededFiles(world, params, seed), fileRow));
          throwIfAborted(signal, 'seeding the reference chat store');
          await client.query(REFERENCE_KEYS_SQL);
          await client.query(
            `SELECT setval(pg_get_serial_sequence('public.message_edits', 'id'), GREATEST(max(id), 1), max(id) IS NOT NULL)
             FROM public.message_edits`,
          );
        });
      } catch (err) {
        // The directory was empty when we started: what is in it now is ours.
        await emptyDirectory(options.filesDir).catch(() => undefined);
        throw err;
      }
      await client.query(`ANALYZE ${REFERENCE_TABLES.map((t) => `public.${t}`).join(', ')}`);
      const after = await databaseSize(client);
      return {
        scale,
        seed,
        rows,
        bytes: after - before,
        files,
        durationMs: Math.round(performance.now() - started),
      };
    },
    signal,
  );
}

function* map<T>(items: Iterable<T>, f: (item: T) => string): Generator<string> {
  for (const item of items) yield f(item);
}

async function refuseExisting(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relname = ANY($1::text[])
     UNION ALL
     SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' AND t.typname = ANY($2::text[]) AND t.typtype = 'e'
     ORDER BY 1`,
    [REFERENCE_TABLES, REFERENCE_TYPES],
  );
  if (rows.length > 0) {
    const names = rows.map((r) => r.name);
    throw new LetheError(
      ErrorCode.TARGET_NOT_EMPTY,
      `refusing to seed: schema public already has ${names.join(', ')}; seed into a fresh database ` +
        `(e.g. \`createdb lethe_demo\`) or drop those objects first`,
      { details: { existing: names } },
    );
  }
}

async function databaseSize(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ size: string }>(
    'SELECT pg_database_size(current_database())::text AS size',
  );
  return Number(rows[0]?.size ?? 0);
}
