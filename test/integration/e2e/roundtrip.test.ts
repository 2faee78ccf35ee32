import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import { backup, initialize, restore } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  MAPPED_TABLES,
  schemaShape,
  tableContents,
  tenantFilter,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';

/**
 * Must hold: a snapshot restores into a fresh database equal, row for row, to the chat
 * store it was taken from — judged by PostgreSQL over the rows themselves, not by lethe's
 * digests — on every storage backend; a tenant restore brings back exactly that tenant's
 * rows; a restore never overwrites a populated target unless told to.
 */

let template: TestDatabase;
beforeAll(async () => {
  template = await createChatTemplate('e2e_rt_tpl');
});
afterAll(async () => {
  await template.drop();
});

/** The URL without its password, and the password for PGPASSWORD: never on a command line. */
function splitPassword(url: string): { url: string; password: string } {
  const u = new URL(url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), password };
}

describe.each(['filesystem', 's3'] as const)('round trip through a %s store', (kind) => {
  let s3: S3rverHandle | undefined;
  let env: LetheEnv;
  let source: Record<string, TableContent>;
  let result: BackupResult;

  beforeAll(async () => {
    if (kind === 's3') s3 = await startS3rver();
    env = await createLetheEnv({
      template: template.name,
      storage: s3 === undefined ? { type: 'filesystem' } : { type: 's3', server: s3 },
    });
    await initialize(env.rt, 'e2e');
    source = await tableContents(env.chat.url);
    result = await backup(env.rt, { actor: 'e2e' });
  });
  afterAll(async () => {
    await env.cleanup();
    await s3?.stop();
  });

  it('backs up every row of every mapped table', () => {
    expect(MAPPED_TABLES).toHaveLength(8);
    const sourceRows = Object.values(source).reduce((n, t) => n + t.rows, 0);
    expect(result.rows).toBe(sourceRows);
    expect(result.cellsWritten).toBe(result.cells);
    expect(result.packs).toBeGreaterThan(1);
  });

  it('restores into a fresh database equal to the store, row for row, with its keys and indexes', async () => {
    const target = await env.database('e2e_rt_full');
    const restored = await restore(env.rt, {
      snapshot: result.snapshotId,
      targetUrl: target.url,
      replace: false,
      blobTarget: env.blobTarget(),
      actor: 'e2e',
    });
    expect(restored.rows).toBe(result.rows);
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) {
      expect(source[table]?.rows, table).toBeGreaterThan(0);
      expect(got[table], table).toEqual(source[table]);
      expect(restored.rowsByTable[table], table).toBe(source[table]?.rows);
    }
    expect(await schemaShape(target.url)).toEqual(await schemaShape(env.chat.url));
  });

  it('restores one tenant (`--tenant`): all of its rows and no other tenant’s', async () => {
    const tenant = '2';
    const expected = await tableContents(env.chat.url, { where: (t) => tenantFilter(t, tenant) });
    // The filter must select a real, proper subset of every table, or the test proves nothing.
    for (const table of MAPPED_TABLES) {
      expect(expected[table]?.rows, table).toBeGreaterThan(0);
      expect(expected[table]?.rows, table).toBeLessThan(source[table]?.rows ?? 0);
    }
    const target = await env.database('e2e_rt_tenant');
    const { url, password } = splitPassword(target.url);
    const run = await env.cli(
      [
        'restore',
        '--config',
        env.configPath,
        '--snapshot',
        result.snapshotId,
        '--target',
        url,
        '--tenant',
        tenant,
        '--blob-target',
        env.blobTarget(),
        '--json',
      ],
      { env: { PGPASSWORD: password } },
    );
    expectExit(run, 0);
    const restored = jsonOut(run) as { tenant: string | null; rows: number };
    expect(restored.tenant).toBe(tenant);
    expect(restored.rows).toBe(Object.values(expected).reduce((n, t) => n + t.rows, 0));
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(expected[table]);
    // Every restored message belongs, through its conversation, to the tenant.
    const others = await tableContents(target.url, {
      where: (t) => (t === 'messages' ? `NOT (${tenantFilter(t, tenant)})` : 'false'),
    });
    expect(others['messages']?.rows).toBe(0);
  });

  it('refuses a populated target in process too (TARGET_NOT_EMPTY), leaving it untouched', async () => {
    const target = await env.database('e2e_rt_busy');
    await restore(env.rt, {
      snapshot: 'latest',
      targetUrl: target.url,
      tenant: '1',
      replace: false,
      blobTarget: env.blobTarget(),
      actor: 'e2e',
    });
    const before = await tableContents(target.url);
    await expect(
      restore(env.rt, { snapshot: 'latest', targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' }),
    ).rejects.toMatchObject({ code: 'TARGET_NOT_EMPTY' });
    expect(await tableContents(target.url)).toEqual(before);
  });

  // The CLI path does not depend on the backend: once is enough.
  if (kind !== 'filesystem') return;

  it('refuses a populated target (TARGET_NOT_EMPTY, exit 2) and leaves it untouched; --replace restores it', async () => {
    const target = await env.database('e2e_rt_cli');
    const { url, password } = splitPassword(target.url);
    const env2 = { PGPASSWORD: password };
    const first = await env.cli(
      ['restore', '--config', env.configPath, '--snapshot', 'latest', '--target', url, '--blob-target', env.blobTarget(), '--json'],
      { env: env2 },
    );
    expectExit(first, 0);
    expect((jsonOut(first) as { rows: number }).rows).toBe(result.rows);
    expect(first.stderr).not.toContain('holds a password');

    // Make the target differ from the snapshot, so that the refusal and the replace both show.
    const { Client } = (await import('pg')).default;
    const client = new Client({ connectionString: target.url });
    await client.connect();
    await client.query('DELETE FROM public.attachments');
    await client.end();
    const altered = await tableContents(target.url);
    expect(altered['attachments']?.rows).toBe(0);

    const refused = await env.cli(
      ['restore', '--config', env.configPath, '--snapshot', 'latest', '--target', url, '--blob-target', env.blobTarget(), '--json'],
      { env: env2 },
    );
    expectExit(refused, 2);
    const error = (
      jsonOut(refused) as { error: { code: string; message: string; tables: string[] } }
    ).error;
    expect(error.code).toBe('TARGET_NOT_EMPTY');
    expect(error.message).toMatch(/--replace/);
    expect([...error.tables].sort()).toEqual([...MAPPED_TABLES]);
    expect(await tableContents(target.url)).toEqual(altered);

    const human = await env.cli(
      ['restore', '--config', env.configPath, '--snapshot', 'latest', '--target', url, '--blob-target', env.blobTarget()],
      { env: env2 },
    );
    expectExit(human, 2);
    expect(human.stderr).toMatch(/already has tables .*attachments/);

    const replaced = await env.cli(
      [
        'restore',
        '--config',
        env.configPath,
        '--snapshot',
        result.snapshotId,
        '--target',
        url,
        '--replace',
        '--blob-target',
        env.blobTarget(),
        '--json',
      ],
      { env: env2 },
    );
    expectExit(replaced, 0);
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(source[table]);
  });
});
