import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { EmbeddedPostgres } from '../../../src/embedded/postgres.ts';
import { freePort } from '../../helpers/ports.ts';
import { REPO_ROOT, type CliResult } from '../../helpers/lethe-env.ts';

/**
 * A deployment on the embedded default, as `lethe demo` writes one: an embedded PostgreSQL
 * (started by each command that needs it, in the temp directory) holding the chat store and
 * the vault, a filesystem store and key files beside the config. For the tests about what
 * happens to that server when lethe is interrupted or the server goes away.
 */
export interface EmbeddedDeployment {
  readonly dir: string;
  readonly configPath: string;
  readonly port: number;
  /** Runs `node bin/lethe.js ...args --config <config>` to completion. */
  cli(args: readonly string[], options?: { timeoutMs?: number }): Promise<CliResult>;
  /** Starts the CLI in a process group of its own, as a shell starts a foreground job. */
  start(args: readonly string[]): RunningCli;
  /** The embedded server's superuser URL for `database` (while a command runs it). */
  url(database: string): string;
  /** Runs `fn` with the embedded server started as lethe starts it (then stopped). */
  withServer<T>(fn: (url: (database: string) => string) => Promise<T>): Promise<T>;
  /** The postmaster's pid from its pid file, or undefined when no server runs. */
  serverPid(): Promise<number | undefined>;
  cleanup(): Promise<void>;
}

export interface RunningCli {
  readonly child: ChildProcess;
  readonly done: Promise<CliResult>;
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LETHE_') && !k.startsWith('PG')) env[k] = v;
  }
  return env;
}

function collect(child: ChildProcess, timeoutMs: number): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return (once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>).then(([code, signal]) => {
    clearTimeout(timer);
    return { code, signal, stdout, stderr };
  });
}

/** Writes the config, password file and directories; nothing is started. */
export async function createEmbeddedDeployment(): Promise<EmbeddedDeployment> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-embedded-'));
  // When the tests run as root the server runs as `postgres`, which must reach its data dir.
  await chmod(dir, 0o755);
  const port = await freePort();
  const password = randomBytes(12).toString('hex');
  await writeFile(join(dir, 'pg-password'), `${password}\n`, { mode: 0o600 });
  const configPath = join(dir, 'lethe.yaml');
  await writeFile(
    configPath,
    [
      'embedded:',
      '  dataDir: pg',
      `  port: ${port}`,
      '  passwordFile: pg-password',
      'chatStore:',
      '  database: { embeddedDatabase: chat }',
      '  blobStores: { files: { url: chat-files } }',
      'vault:',
      '  database: { embeddedDatabase: lethe_vault }',
      'storage: { type: filesystem, path: objects }',
      'masterKey: { file: master.key }',
      'signingKeys:',
      '  backup: { file: backup-signing.key }',
      '  lifecycle: { file: lifecycle-signing.key }',
      'log: { level: warn }',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const children = new Set<ChildProcess>();
  const spawnCli = (args: readonly string[], extra: SpawnOptions): ChildProcess => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'lethe.js'), ...args, '--config', configPath], {
      cwd: dir,
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...extra,
    });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  };
  const serverPid = async (): Promise<number | undefined> => {
    try {
      const text = await readFile(join(dir, 'pg', 'postmaster.pid'), 'utf8');
      const pid = Number(text.split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    dir,
    configPath,
    port,
    cli: (args, options = {}) => collect(spawnCli(args, {}), options.timeoutMs ?? 120_000),
    start: (args) => {
      const child = spawnCli(args, { detached: true });
      return { child, done: collect(child, 120_000) };
    },
    url: (database) => `postgres://postgres:${password}@127.0.0.1:${port}/${database}`,
    withServer: async (fn) => {
      const server = await EmbeddedPostgres.start({ dataDir: join(dir, 'pg'), port, password, logFile: join(dir, 'postgres.log') });
      try {
        return await fn((database) => server.url(database));
      } finally {
        await server.stop();
      }
    },
    serverPid,
    cleanup: async () => {
      for (const child of children) child.kill('SIGKILL');
      // A server a killed lethe left running belongs to this test: stop it by its pid.
      const pid = await serverPid();
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGQUIT');
        } catch {
          // already gone
        }
        for (let i = 0; i < 100 && (await serverPid()) !== undefined; i++) await new Promise((r) => setTimeout(r, 100));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The rows of `sql` on the database at `url`. */
export async function queryRows(url: string, sql: string): Promise<Record<string, unknown>[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<Record<string, unknown>>(sql)).rows;
  } finally {
    await client.end();
  }
}

/**
 * Waits until a session with `application_name` runs a statement starting with `prefix` on
 * the server at `url` (the backup's COPY of the rows, say); throws after `timeoutMs`.
 */
export async function waitForStatement(url: string, applicationName: string, prefix: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE $2",
        [applicationName, `${prefix}%`],
      );
      if (Number(rows[0]?.n ?? 0) > 0) return;
    } catch {
      // The server is not up yet: the command starts it.
    } finally {
      await client.end().catch(() => undefined);
    }
    if (Date.now() > deadline) throw new Error(`no ${applicationName} session ran ${prefix}… within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
