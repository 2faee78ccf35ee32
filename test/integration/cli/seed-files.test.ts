import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  type LetheEnv,
  type RawConfig,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { withDb } from '../store/db.ts';

/**
 * `lethe seed` writes the reference store's files into the blob store the built-in mapping
 * reads (`chatStore.blobStores.files`) or into `--files DIR`, and a builtin-mapping config
 * without that store fails with a message naming the config key, before anything runs.
 */
describe('lethe seed and the built-in mapping\'s blob store', () => {
  let empty: TestDatabase;
  let env: LetheEnv;
  let elsewhere: string;
  beforeAll(async () => {
    empty = await createTestDatabase('seed_cli_empty');
    env = await createLetheEnv({ template: empty.name });
    elsewhere = await mkdtemp(join(tmpdir(), 'lethe-seed-cli-'));
  });
  afterAll(async () => {
    await env.cleanup();
    await empty.drop();
    await rm(elsewhere, { recursive: true, force: true });
  });

  const withoutBlobStores = (): RawConfig => {
    const { blobStores: _dropped, ...chatStore } = env.raw['chatStore'] as RawConfig;
    return { ...env.raw, chatStore };
  };

  it('refuses to seed without --files or chatStore.blobStores.files, and an s3:// store, naming the fix', async () => {
    const none = await env.writeConfig('no-blob-store.yaml', withoutBlobStores());
    const missing = await env.cli(['seed', '--scale', 'small', '--config', none]);
    expectExit(missing, 2);
    expect(missing.stderr).toContain('give --files DIR, or set chatStore.blobStores.files');
    const s3 = await env.writeConfig('s3-blob-store.yaml', {
      ...env.raw,
      chatStore: {
        ...(env.raw['chatStore'] as RawConfig),
        blobStores: { files: { url: 's3://chat-files/uploads', accessKeyId: 'reader', secretAccessKey: 'not-used-here' } },
      },
    });
    const remote = await env.cli(['seed', '--scale', 'small', '--config', s3]);
    expectExit(remote, 2);
    expect(remote.stderr).toContain('chatStore.blobStores.files is an s3:// store');
    expect(remote.stderr).not.toContain('not-used-here');
    // Nothing was seeded by either.
    expect(await filesUnder(env.filesDir)).toEqual([]);
  });

  it('seeds the files into the configured blob store, where every files row points', async () => {
    const result = await env.cli(['seed', '--scale', 'small', '--seed', '3', '--json', '--config', env.configPath], { timeoutMs: 120_000 });
    expectExit(result, 0);
    const stats = jsonOut(result) as { rows: Record<string, number>; files: { dir: string; count: number; bytes: number } };
    expect(stats.files.dir).toBe(env.filesDir);
    expect(stats.files.count).toBe(stats.rows['files']);
    const keys = await withDb(env.chat.url, async (c) => {
      const { rows } = await c.query<{ key: string; size: string }>('SELECT object_key AS key, byte_size::text AS size FROM public.files ORDER BY object_key');
      return rows;
    });
    expect(await filesUnder(env.filesDir)).toEqual(keys.map((k) => k.key));
    let bytes = 0;
    for (const k of keys) {
      expect((await stat(join(env.filesDir, k.key))).size).toBe(Number(k.size));
      bytes += Number(k.size);
    }
    expect(stats.files.bytes).toBe(bytes);
  }, 120_000);

  it('refuses a builtin-mapping backup without chatStore.blobStores.files, naming the key (exit 2)', async () => {
    const none = await env.writeConfig('no-blob-store-backup.yaml', withoutBlobStores());
    const result = await env.cli(['backup', '--config', none]);
    expectExit(result, 2);
    expect(result.stderr).toContain('tables.files.blob.store');
    expect(result.stderr).toContain('add it under chatStore.blobStores');
  });

  it('seeds into --files DIR when given, and says where in its human output', async () => {
    const other = await createTestDatabase('seed_cli_other');
    try {
      const config = await env.writeConfig('other.yaml', {
        ...env.raw,
        chatStore: { ...(env.raw['chatStore'] as RawConfig), database: { url: other.url } },
      });
      const result = await env.cli(['seed', '--scale', 'small', '--files', elsewhere, '--config', config], { timeoutMs: 120_000 });
      expectExit(result, 0);
      expect(result.stdout).toMatch(new RegExp(`\\d+ files \\([\\d.]+ MiB\\) in ${elsewhere}`));
      expect((await filesUnder(elsewhere)).length).toBeGreaterThan(100);
    } finally {
      await other.drop();
    }
  }, 120_000);
});
