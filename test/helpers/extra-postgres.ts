import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { EmbeddedPostgres } from '../../src/embedded/postgres.ts';
import { freePort } from './ports.ts';

/** A PostgreSQL cluster of its own for one test file (see {@link startExtraPostgres}). */
export interface ExtraPostgres {
  readonly server: EmbeddedPostgres;
  /** The superuser's password (for clients such as pg_receivewal, through PGPASSWORD). */
  readonly password: string;
  readonly port: number;
  /** Superuser URL of `database`. */
  url(database: string): string;
  /** Creates `database` and returns its superuser URL. */
  createDatabase(database: string): Promise<string>;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Starts a second embedded cluster on 127.0.0.1 with extra server `settings` (`name=value`),
 * for a test that needs a server configured unlike the shared one (e.g. `archive_mode=on`).
 * Call stop() in afterAll.
 */
export async function startExtraPostgres(settings: readonly string[]): Promise<ExtraPostgres> {
  const root = await mkdtemp(join(tmpdir(), 'lethe-test-pg-extra-'));
  // When tests run as root the server runs as `postgres`, which must be able to reach its data dir.
  await chmod(root, 0o755);
  const password = randomBytes(12).toString('hex');
  const port = await freePort();
  let server: EmbeddedPostgres;
  try {
    server = await EmbeddedPostgres.start({
      dataDir: join(root, 'pgdata'),
      port,
      password,
      unsafeFast: true,
      logFile: join(root, 'postgres.log'),
      settings,
    });
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  return {
    server,
    password,
    port,
    url: (database) => server.url(database),
    createDatabase: async (database) => {
      const client = new pg.Client({ connectionString: server.url('postgres') });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
      } finally {
        await client.end();
      }
      return server.url(database);
    },
    stop: async () => {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
