import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import { EmbeddedPostgres } from '../../src/embedded/postgres.ts';
import { freePort } from './ports.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the PostgreSQL server shared by the whole test run (database `postgres`). */
    pgAdminUrl: string;
  }
}

/**
 * Starts one real PostgreSQL for the whole run; each test file creates its own databases on
 * it (see postgres.ts), so files stay isolated without paying for a cluster each.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const root = await mkdtemp(join(tmpdir(), 'lethe-test-pg-'));
  // When tests run as root the server runs as `postgres`, which must be able to reach its data dir.
  await chmod(root, 0o755);
  let server: EmbeddedPostgres;
  try {
    server = await EmbeddedPostgres.start({
      dataDir: join(root, 'pgdata'),
      port: await freePort(),
      password: randomBytes(12).toString('hex'),
      unsafeFast: true,
      logFile: join(root, 'postgres.log'),
    });
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  project.provide('pgAdminUrl', server.url('postgres'));
  return async () => {
    await server.stop();
    await rm(root, { recursive: true, force: true });
  };
}
