import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { stringify as toYaml } from 'yaml';
import { parseConfig, type Config } from '../../src/config/index.ts';
import { Runtime } from '../../src/jobs/runtime.ts';
import { createLogger } from '../../src/log/index.ts';
import { BUILTIN_BLOB_STORE, BUILTIN_MAPPING } from '../../src/mapping/index.ts';
import { addMessages, REFERENCE_TABLES, seedChatStore } from '../../src/store/index.ts';
import { createTestDatabase, withAdmin } from './postgres.ts';
import type { S3rverHandle } from './s3.ts';

/**
 * End-to-end fixture: a lethe deployment on the run's shared PostgreSQL (chat store and
 * vault databases), a filesystem or s3rver object store and a master key path in a temp
 * directory, a config file describing it, an in-process {@link Runtime}, and a runner for
 * the real CLI (`node bin/lethe.js`) as a child process.
 */

export type TestDatabase = Awaited<ReturnType<typeof createTestDatabase>>;

/** The repository root, where `bin/lethe.js` lives. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Primary-key order of every reference table, for row-by-row comparisons. */
const PK_ORDER: Readonly<Record<string, string>> = {
  tenants: 'id',
  users: 'id',
  conversations: 'id',
  memberships: 'conversation_id, user_id',
  messages: 'id',
  message_edits: 'id',
  attachments: 'id',
  files: 'id',
};

/** The tables the built-in mapping backs up (all of the reference schema). */
export const MAPPED_TABLES: readonly string[] = Object.keys(BUILTIN_MAPPING.tables).sort();

/**
 * Row filters selecting one tenant's rows of each reference table, written against the
 * store's own foreign keys (not lethe's mapping), to check a `--tenant` restore.
 */
export function tenantFilter(table: string, tenant: string): string {
  const t = `'${tenant.replaceAll("'", "''")}'::bigint`;
  switch (table) {
    case 'tenants':
      return `t.id = ${t}`;
    case 'users':
    case 'conversations':
    case 'attachments':
      return `t.tenant_id = ${t}`;
    case 'memberships':
    case 'messages':
      return `t.conversation_id IN (SELECT id FROM public.conversations WHERE tenant_id = ${t})`;
    case 'message_edits':
    case 'files':
      return `t.message_id IN (SELECT m.id FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id WHERE c.tenant_id = ${t})`;
    default:
      throw new Error(`no tenant filter for table ${table}`);
  }
}

export interface TableContent {
  readonly rows: number;
  /** md5 over every row's text form, joined by newlines, in primary-key order. */
  readonly md5: string | null;
}

/**
 * Row count and content hash of each mapped table, computed by PostgreSQL from the rows
 * themselves (not by lethe). `where` optionally filters a table's rows (alias `t`).
 */
export async function tableContents(
  url: string,
  options: { schema?: string; where?: (table: string) => string } = {},
): Promise<Record<string, TableContent>> {
  const schema = options.schema ?? 'public';
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const out: Record<string, TableContent> = {};
    for (const table of MAPPED_TABLES) {
      const order = PK_ORDER[table];
      if (order === undefined) throw new Error(`no primary-key order known for ${table}`);
      const where = options.where?.(table) ?? 'true';
      const { rows } = await client.query<{ n: string; h: string | null }>(
        `SELECT count(*) AS n, md5(string_agg(t::text, E'\\n' ORDER BY ${order
          .split(', ')
          .map((c) => `t.${c}`)
          .join(', ')})) AS h
           FROM ${client.escapeIdentifier(schema)}.${client.escapeIdentifier(table)} t WHERE ${where}`,
      );
      out[table] = { rows: Number(rows[0]?.n ?? -1), md5: rows[0]?.h ?? null };
    }
    return out;
  } finally {
    await client.end();
  }
}

/**
 * Constraints (name, type, definition) and indexes (definition) of the mapped tables: the
 * schema a restore must reproduce.
 */
export async function schemaShape(url: string, schema = 'public'): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ item: string }>(
      `SELECT format('%s constraint %s %s: %s', c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)) AS item
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = $1
       UNION ALL
       SELECT format('index %s: %s', indexname, indexdef) FROM pg_indexes WHERE schemaname = $1
       ORDER BY 1`,
      [schema],
    );
    return rows.map((r) => r.item);
  } finally {
    await client.end();
  }
}

/**
 * Every row of every table in the vault schema of the database at `url`, as JSON text (one
 * line per row; bytea as `\\x…` hex): what anyone who can read the vault can see.
 */
export async function vaultRowsText(url: string, schema = 'lethe'): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ t: string }>('SELECT tablename AS t FROM pg_tables WHERE schemaname = $1 ORDER BY 1', [schema]);
    const lines: string[] = [];
    for (const { t } of rows) {
      const dump = await client.query<{ j: string }>(
        `SELECT row_to_json(x)::text AS j FROM ${client.escapeIdentifier(schema)}.${client.escapeIdentifier(t)} x`,
      );
      lines.push(...dump.rows.map((r) => r.j));
    }
    return lines.join('\n');
  } finally {
    await client.end();
  }
}

/** A single value from a query on `url`. */
export async function queryValue<T>(url: string, sql: string, params: unknown[] = []): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ v: T }>(sql, params);
    const row = rows[0];
    if (row === undefined) throw new Error(`no row from ${sql}`);
    return row.v;
  } finally {
    await client.end();
  }
}

/**
 * sha256 (hex) of every file under `dir`, by `/`-joined relative path: the bytes of a chat
 * store's object store (or a restored copy), compared without trusting lethe.
 */
export async function fileDigests(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const path of await filesUnder(dir)) {
    out[path] = createHash('sha256')
      .update(await readFile(join(dir, path)))
      .digest('hex');
  }
  return out;
}

/** A chat template database and the directory holding its `files` bytes (its object store). */
export interface ChatTemplate extends TestDatabase {
  /** The template's object store; {@link createLetheEnv} gives each environment a copy. */
  readonly filesDir: string;
}

/** Object stores of the templates this process created, by database name. */
const templateFiles = new Map<string, string>();

/** How many tenants the e2e chat store keeps (see {@link createChatTemplate}). */
export const E2E_TENANTS = 4;
/** Recent messages added to the trimmed store. */
const EXTRA_MESSAGES = 5000;

/**
 * A template database holding the reference chat store at the `small` scale (default
 * seed), trimmed to its first {@link E2E_TENANTS} tenants. The full small store has ~7,900
 * cells, each with its own key, and takes ~30 s to back up and ~25 s to verify on two
 * cores; the trimmed one keeps every table and data class at about a ninth of the cells
 * (~840), so a test file can afford several backups. Then 5,000 recent messages are added
 * (few new cells, ~0.6 MB), so that with `packSizeMiB: 1` a snapshot spans two packs.
 * The template's files (table `files`, bytes outside the database) live in a temp directory
 * ({@link ChatTemplate.filesDir}); the trimmed tenants' files are removed with their rows.
 * Clone it per environment with `createLetheEnv({ template: template.name })` (which copies
 * the files too) or `createTestDatabase(prefix, template.name)`; drop it in afterAll, which
 * removes the files as well.
 */
export async function createChatTemplate(prefix = 'e2e_tpl'): Promise<ChatTemplate> {
  const db = await createTestDatabase(prefix);
  const filesDir = await mkdtemp(join(tmpdir(), 'lethe-chat-files-'));
  try {
    await seedChatStore(db.url, { scale: 'small', filesDir });
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const keep = E2E_TENANTS;
      await client.query('BEGIN');
      await client.query('DELETE FROM public.attachments WHERE tenant_id > $1', [keep]);
      const trimmed = await client.query<{ key: string }>(
        `DELETE FROM public.files f USING public.messages m, public.conversations c
          WHERE f.message_id = m.id AND m.conversation_id = c.id AND c.tenant_id > $1
          RETURNING f.object_key AS key`,
        [keep],
      );
      for (const { key } of trimmed.rows) await rm(join(filesDir, key));
      await client.query(
        `DELETE FROM public.message_edits e USING public.messages m, public.conversations c
          WHERE e.message_id = m.id AND m.conversation_id = c.id AND c.tenant_id > $1`,
        [keep],
      );
      await client.query(
        'DELETE FROM public.messages m USING public.conversations c WHERE m.conversation_id = c.id AND c.tenant_id > $1',
        [keep],
      );
      await client.query(
        'DELETE FROM public.memberships m USING public.conversations c WHERE m.conversation_id = c.id AND c.tenant_id > $1',
        [keep],
      );
      await client.query('DELETE FROM public.conversations WHERE tenant_id > $1', [keep]);
      await client.query('DELETE FROM public.users WHERE tenant_id > $1', [keep]);
      await client.query('DELETE FROM public.tenants WHERE id > $1', [keep]);
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
    // A burst of recent traffic: bytes in few new cells, so the store spans several 1 MiB packs.
    await addMessages(db.url, { count: EXTRA_MESSAGES, seed: 4242, filesDir });
    const contents = await tableContents(db.url);
    for (const table of REFERENCE_TABLES) {
      if ((contents[table]?.rows ?? 0) === 0)
        throw new Error(`trimmed template has no ${table} rows`);
    }
    templateFiles.set(db.name, filesDir);
    return {
      ...db,
      filesDir,
      drop: async () => {
        templateFiles.delete(db.name);
        await db.drop();
        await rm(filesDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await db.drop();
    await rm(filesDir, { recursive: true, force: true });
    throw err;
  }
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Parses the JSON a `--json` command printed on stdout (its last non-empty line); unchecked. */
export function jsonOut(result: CliResult): unknown {
  const lines = result.stdout
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '');
  const last = lines.at(-1);
  if (last === undefined) {
    throw new Error(`no JSON on stdout (exit ${String(result.code)}); stderr:\n${result.stderr}`);
  }
  return JSON.parse(last);
}

/** Files (relative `/`-joined paths) under `dir`, recursively; [] when it does not exist. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string, rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(at, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const path = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(join(at, e.name), path);
      else out.push(path);
    }
  };
  await walk(dir, '');
  return out.sort();
}

/** Which object store the environment uses. */
export type EnvStorage =
  { type: 'filesystem' } | { type: 's3'; server: S3rverHandle; secretAccessKey?: string };

export interface LetheEnvOptions {
  /** Template database to clone the chat store from (see {@link createChatTemplate}). */
  readonly template: string;
  readonly storage?: EnvStorage;
  /** Overrides of the `backup` section (default: 1 MiB packs, monthly periods). */
  readonly backup?: { packSizeMiB?: number; granularity?: 'month' | 'week' | 'day'; fullEvery?: number };
  /** Level of the in-process runtime's logger (its lines are kept in memory). */
  readonly logLevel?: string;
  /** More top-level config sections (e.g. `retention`), merged over the defaults. */
  readonly config?: RawConfig;
}

/** The config document, before validation: what the YAML file holds. */
export type RawConfig = Record<string, unknown>;

export interface LetheEnv {
  /** The temp directory holding the config, the master key and (filesystem) the store. */
  readonly dir: string;
  readonly chat: TestDatabase;
  readonly vaultDb: TestDatabase;
  /** Root of the filesystem store; undefined for s3. */
  readonly storePath: string | undefined;
  /**
   * The chat store's object store (`chatStore.blobStores.files`, the built-in mapping's
   * `files` bytes): a copy of the template's, or empty when the template has none.
   */
  readonly filesDir: string;
  readonly masterKeyFile: string;
  readonly raw: RawConfig;
  readonly configPath: string;
  readonly config: Config;
  /** In-process runtime over {@link config}; closed by cleanup. */
  readonly rt: Runtime;
  /** What the in-process runtime has logged so far. */
  logText(): string;
  /** Another database on the test server, dropped by cleanup. */
  database(prefix: string, template?: string): Promise<TestDatabase>;
  /** Writes `raw` as YAML to `name` in {@link dir}; returns its path. */
  writeConfig(name: string, raw: unknown): Promise<string>;
  /**
   * A new `file://` directory under {@link dir} for a restore's files (`--blob-target`):
   * snapshots of the built-in mapping hold the `files` table's bytes, and restore refuses
   * without a place to write them. Each call gives another directory.
   */
  blobTarget(): string;
  /** Runs `node bin/lethe.js ...args` to completion. */
  cli(args: readonly string[], options?: CliOptions): Promise<CliResult>;
  /** Starts `node bin/lethe.js ...args`; killed by cleanup if still running. */
  spawnCli(args: readonly string[], options?: CliOptions): ChildProcess;
  /** Drops every database, stops every child, removes the temp directory. */
  cleanup(): Promise<void>;
}

export interface CliOptions {
  /** Extra environment variables (LETHE_* from the test's own environment are never passed). */
  readonly env?: Record<string, string>;
  readonly timeoutMs?: number;
  /** Run as this user and group (the tests run as root: to meet a directory it cannot write). */
  readonly uid?: number;
  readonly gid?: number;
}

function childEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LETHE_') && !k.startsWith('PG')) env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Builds a lethe deployment for one test: clones the chat store from `template`, creates
 * an empty vault database, writes `lethe.yaml` (filesystem store under the temp dir, or an
 * s3rver bucket under a fresh prefix) and returns a runtime over it. Nothing is
 * initialised: call `initialize(env.rt, ...)` or `lethe init`.
 */
export async function createLetheEnv(options: LetheEnvOptions): Promise<LetheEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-e2e-'));
  const databases: TestDatabase[] = [];
  const children = new Set<ChildProcess>();
  const logLines: string[] = [];
  let rt: Runtime | undefined;

  const database = async (prefix: string, template?: string): Promise<TestDatabase> => {
    const db = await createTestDatabase(prefix, template);
    databases.push(db);
    return db;
  };

  const cleanup = async (): Promise<void> => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
    }
    children.clear();
    await rt?.close();
    // Verify drops its scratch databases itself; a failing test may leave one behind.
    for (const db of databases.splice(0)) await db.drop();
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const chat = await database('e2e_chat', options.template);
    const vaultDb = await database('e2e_vault');
    const storage = options.storage ?? { type: 'filesystem' };
    const storePath = storage.type === 'filesystem' ? join(dir, 'store') : undefined;
    const masterKeyFile = join(dir, 'master.key');
    // Each environment owns a copy of the template's files: tests may erase or damage them.
    const filesDir = join(dir, 'chat-files');
    const templateDir = templateFiles.get(options.template);
    if (templateDir === undefined) await mkdir(filesDir);
    else await cp(templateDir, filesDir, { recursive: true });
    const raw: RawConfig = {
      chatStore: {
        database: { url: chat.url },
        mapping: 'builtin',
        blobStores: { [BUILTIN_BLOB_STORE]: { url: 'chat-files' } },
      },
      vault: { database: { url: vaultDb.url }, schema: 'lethe' },
      storage:
        storage.type === 'filesystem'
          ? { type: 'filesystem', path: 'store' }
          : {
              type: 's3',
              endpoint: storage.server.endpoint,
              region: 'us-east-1',
              bucket: storage.server.bucket,
              prefix: `e2e-${chat.name}/`,
              forcePathStyle: true,
              accessKeyId: storage.server.accessKeyId,
              secretAccessKey: storage.secretAccessKey ?? storage.server.secretAccessKey,
            },
      masterKey: { file: 'master.key' },
      signingKeys: { backup: { file: 'backup-signing.key' }, lifecycle: { file: 'lifecycle-signing.key' } },
      backup: { packSizeMiB: 1, granularity: 'month', ...options.backup },
      verify: { concurrency: 4 },
      log: { level: 'warn' },
      // Most suites exercise erase and hold by name; test/integration/lifecycle/signed-approvals
      // turns this off to test the signatures themselves.
      approvals: { allowUnsigned: true },
      ...options.config,
    };
    const writeConfig = async (name: string, doc: unknown): Promise<string> => {
      const path = join(dir, name);
      await writeFile(path, toYaml(doc), { mode: 0o600 });
      return path;
    };
    const configPath = await writeConfig('lethe.yaml', raw);
    let blobTargets = 0;
    const blobTarget = (): string => `file://${join(dir, `restored-files-${++blobTargets}`)}`;
    const config = parseConfig(raw, dir);
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, callback) {
        logLines.push(String(chunk));
        callback();
      },
    });
    rt = new Runtime(config, createLogger(options.logLevel ?? 'warn', sink));

    const spawnCli = (args: readonly string[], cliOptions: CliOptions = {}): ChildProcess => {
      const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'lethe.js'), ...args], {
        cwd: dir,
        env: childEnv(cliOptions.env),
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(cliOptions.uid === undefined ? {} : { uid: cliOptions.uid }),
        ...(cliOptions.gid === undefined ? {} : { gid: cliOptions.gid }),
      });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    };

    const cli = async (
      args: readonly string[],
      cliOptions: CliOptions = {},
    ): Promise<CliResult> => {
      const child = spawnCli(args, cliOptions);
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
      child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const timeoutMs = cliOptions.timeoutMs ?? 90_000;
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
      clearTimeout(timer);
      return { code, signal, stdout, stderr };
    };

    return {
      dir,
      chat,
      vaultDb,
      storePath,
      filesDir,
      masterKeyFile,
      raw,
      configPath,
      config,
      rt,
      logText: () => logLines.join(''),
      database,
      writeConfig,
      blobTarget,
      cli,
      spawnCli,
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Waits until no session holds an advisory lock in `database` (a killed run's job lock). */
export async function waitForAdvisoryLocksReleased(
  database: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const held = await withAdmin(async (c) => {
      const { rows } = await c.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND d.datname = $1`,
        [database],
      );
      return Number(rows[0]?.n ?? 0);
    });
    if (held === 0) return;
    if (Date.now() > deadline)
      throw new Error(`advisory locks still held in ${database} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Fails, showing the command's output, unless it exited with `code`. */
export function expectExit(result: CliResult, code: number): void {
  if (result.code !== code) {
    throw new Error(
      `expected exit code ${code}, got ${String(result.code)} (signal ${String(result.signal)})\n` +
        `--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`,
    );
  }
}
