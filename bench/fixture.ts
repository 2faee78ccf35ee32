import { randomBytes } from 'node:crypto';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/index.ts';
import { EmbeddedPostgres } from '../src/embedded/postgres.ts';
import { Runtime } from '../src/jobs/runtime.ts';
import { initialize } from '../src/jobs/tasks.ts';
import { createLogger } from '../src/log/index.ts';
import { BUILTIN_BLOB_STORE } from '../src/mapping/index.ts';
import { seedChatStore, withClient, type Scale, type SeedStats } from '../src/store/index.ts';
import { freePort } from '../src/util/net.ts';

/**
 * The benchmark's world: one embedded PostgreSQL, a seeded template database with its files
 * directory (the chat store's object store), and per run a clone of both with its own vault
 * database, object directory, master key and config file.
 */

/** The config file refers to the password by name; children get it in their environment. */
export const PASSWORD_VARIABLE = 'LETHE_BENCH_PGPASSWORD';
const TEMPLATE_DATABASE = 'bench_seed';
/** The template's files, under the work directory; each run gets a copy in `chat-files/`. */
const TEMPLATE_FILES = 'template-files';
/** A run's chat object store, relative to its directory (and its config file). */
const RUN_FILES = 'chat-files';

export interface BenchServer {
  readonly server: EmbeddedPostgres;
  readonly port: number;
  readonly user: string;
  readonly password: string;
}

/** Starts a durable (fsync on) embedded PostgreSQL with a fresh cluster in `workDir/pg`. */
export async function startServer(workDir: string): Promise<BenchServer> {
  const port = await freePort();
  const password = randomBytes(18).toString('base64url');
  const user = 'postgres';
  const server = await EmbeddedPostgres.start({
    dataDir: join(workDir, 'pg'),
    port,
    user,
    password,
    unsafeFast: false,
    logFile: join(workDir, 'postgres.log'),
  });
  return { server, port, user, password };
}

function adminUrl(s: BenchServer): string {
  return s.server.url('postgres');
}

/** Runs statements on the server's `postgres` database, one at a time. */
async function admin(
  s: BenchServer,
  doing: string,
  statements: readonly string[],
  signal?: AbortSignal,
): Promise<void> {
  await withClient(
    adminUrl(s),
    doing,
    async (client) => {
      for (const sql of statements) await client.query(sql);
    },
    signal,
  );
}

export interface SeededTemplate {
  readonly stats: SeedStats;
  readonly serverVersion: string;
  /** The template's files directory; {@link prepareRun} copies it for each run. */
  readonly filesDir: string;
}

/**
 * Seeds the template database at `scale` (its files into `workDir/template-files`), then
 * VACUUM ANALYZE: the clones start with hint
 * bits set and statistics gathered, like a long-lived database, so the first reader (the
 * full backup) does not pay for the bulk load's after-effects that pg_dump then skips.
 */
export async function seedTemplate(
  s: BenchServer,
  workDir: string,
  scale: Scale,
  signal: AbortSignal,
  onProgress: (text: string) => void,
): Promise<SeededTemplate> {
  await admin(
    s,
    'creating the template database',
    [`CREATE DATABASE ${TEMPLATE_DATABASE}`],
    signal,
  );
  const url = s.server.url(TEMPLATE_DATABASE);
  const filesDir = join(workDir, TEMPLATE_FILES);
  const stats = await seedChatStore(url, {
    scale,
    filesDir,
    signal,
    onProgress: (p) => onProgress(`seed: ${p.table} ${p.rows} rows`),
  });
  const serverVersion = await withClient(
    url,
    'vacuuming the template database',
    async (client) => {
      await client.query('VACUUM ANALYZE');
      const { rows } = await client.query<{ v: string }>(
        "SELECT current_setting('server_version') AS v",
      );
      return rows[0]?.v ?? 'unknown';
    },
    signal,
  );
  return { stats, serverVersion, filesDir };
}

export interface RunSetup {
  readonly dir: string;
  readonly storageDir: string;
  /** The run's copy of the chat store's files (`chatStore.blobStores.files`). */
  readonly filesDir: string;
  readonly configFile: string;
  readonly chatDatabase: string;
  readonly vaultDatabase: string;
  /** The chat store with credentials, for the in-process `addMessages`. */
  readonly chatUrl: string;
  /** What the config's `${…}` references need. */
  readonly env: Readonly<Record<string, string>>;
  /** The lethe master key's age recipient: the baseline encrypts to it too. */
  readonly recipient: string;
}

function configDocument(
  s: BenchServer,
  chatDatabase: string,
  vaultDatabase: string,
): Record<string, unknown> {
  const url = (database: string): string =>
    `postgres://${s.user}:\${${PASSWORD_VARIABLE}}@127.0.0.1:${s.port}/${database}`;
  return {
    chatStore: {
      database: { url: url(chatDatabase) },
      mapping: 'builtin',
      blobStores: { [BUILTIN_BLOB_STORE]: { url: RUN_FILES } },
    },
    vault: { database: { url: url(vaultDatabase) }, schema: 'lethe' },
    storage: { type: 'filesystem', path: 'objects' },
    masterKey: { file: 'master.key' },
    signingKeys: { backup: { file: 'backup-signing.key' }, lifecycle: { file: 'lifecycle-signing.key' } },
    log: { level: 'warn' },
    // The lifecycle step erases by typed names (bench-requester, bench-approver): the
    // benchmark measures the erasure, not the SSH signatures around it.
    approvals: { allowUnsigned: true },
  };
}

/**
 * Prepares run `index`: clones the template into a fresh chat database and its files into
 * the run's `chat-files/` (the churn adds and removes files there, so runs must not share
 * them), creates an empty vault database, writes the config file (mode 0600; the password
 * stays out of it) and runs `initialize` on it, as `lethe init` would.
 */
export async function prepareRun(
  s: BenchServer,
  workDir: string,
  template: SeededTemplate,
  index: number,
  signal: AbortSignal,
): Promise<RunSetup> {
  const chatDatabase = `bench_chat_${index}`;
  const vaultDatabase = `bench_vault_${index}`;
  await admin(
    s,
    `creating the databases of run ${index}`,
    [
      `CREATE DATABASE ${chatDatabase} TEMPLATE ${TEMPLATE_DATABASE}`,
      `CREATE DATABASE ${vaultDatabase}`,
      'CHECKPOINT',
    ],
    signal,
  );
  const dir = join(workDir, `run-${index}`);
  await mkdir(dir, { mode: 0o700 });
  const filesDir = join(dir, RUN_FILES);
  await cp(template.filesDir, filesDir, { recursive: true });
  const raw = configDocument(s, chatDatabase, vaultDatabase);
  const configFile = join(dir, 'lethe.yaml');
  await writeFile(configFile, stringify(raw), { mode: 0o600 });
  const env = { [PASSWORD_VARIABLE]: s.password };
  const runtime = new Runtime(parseConfig(raw, dir, env), createLogger('warn'));
  let recipient: string;
  try {
    recipient = (await initialize(runtime, 'lethe-bench')).masterRecipient;
  } finally {
    await runtime.close();
  }
  return {
    dir,
    storageDir: join(dir, 'objects'),
    filesDir,
    configFile,
    chatDatabase,
    vaultDatabase,
    chatUrl: s.server.url(chatDatabase),
    env,
    recipient,
  };
}

/** Forces a checkpoint, so that the next measurement does not share the disk with one. */
export async function checkpoint(s: BenchServer, signal: AbortSignal): Promise<void> {
  await admin(s, 'checkpointing', ['CHECKPOINT'], signal);
}

/** Size of `database` as PostgreSQL counts it: tables, TOAST and indexes. */
export async function databaseBytes(s: BenchServer, database: string): Promise<number> {
  return withClient(adminUrl(s), 'measuring the database', async (client) => {
    const { rows } = await client.query<{ size: string }>(
      'SELECT pg_database_size($1)::text AS size',
      [database],
    );
    return Number(rows[0]?.size ?? 0);
  });
}

/** Drops a run's databases, so that a long series of runs does not fill the disk. */
export async function dropRun(s: BenchServer, run: RunSetup): Promise<void> {
  await admin(s, 'dropping the run databases', [
    `DROP DATABASE IF EXISTS ${run.chatDatabase} WITH (FORCE)`,
    `DROP DATABASE IF EXISTS ${run.vaultDatabase} WITH (FORCE)`,
  ]);
}
