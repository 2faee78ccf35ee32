import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../../src/storage/index.ts';
import { createLetheEnv, expectExit, jsonOut, type CliResult, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate } from '../e2e/tiny-chat-store.ts';

/**
 * A filesystem store is created by `lethe init` and by nothing else: a `storage.path` whose
 * disk is not mounted must not get a full backup written beneath the mount point. And a
 * store lethe cannot write to is reported as such (read-only file system, permission), not
 * as the ENOENT a recursive mkdir reports on a read-only mount.
 */

/** The uid and gid of `nobody`, to run the CLI as a user that cannot write a root-owned directory. */
function nobody(): { uid: number; gid: number } {
  const out = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' });
  return { uid: Number(out.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await chown(path, uid, gid);
  const info = await stat(path);
  if (!info.isDirectory()) return;
  for (const entry of await readdir(path)) await chownTree(join(path, entry), uid, gid);
}

/** Sets the mode of `path` and every directory under it. */
async function chmodDirs(path: string, mode: number): Promise<void> {
  await chmod(path, mode);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.isDirectory()) await chmodDirs(join(path, entry.name), mode);
  }
}

function oneLine(result: CliResult): string {
  const lines = result.stderr.trim().split('\n');
  expect(lines, result.stderr).toHaveLength(1);
  return lines[0] ?? '';
}

describe('a filesystem store only lethe init creates', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  const storePath = (): string => env.storePath ?? '';

  beforeAll(async () => {
    template = await createTinyChatTemplate('cli_fs_store_tpl');
    env = await createLetheEnv({ template: template.name });
  });

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('backup refuses a storage.path that does not exist, and creates nothing there', async () => {
    // The vault is initialised, the store is not (as after a disk was unmounted).
    expectExit(await env.cli(['init', '--config', env.configPath]), 0);
    await rm(storePath(), { recursive: true });
    const result = await env.cli(['backup', '--config', env.configPath]);
    expectExit(result, 1);
    const line = oneLine(result);
    expect(line).toContain(`storage path ${storePath()} does not exist`);
    expect(line).toContain('`lethe init`');
    await expect(stat(storePath())).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('backup refuses an empty directory (a mount point with nothing mounted), and writes nothing in it', async () => {
    await mkdir(storePath(), { mode: 0o755 });
    const result = await env.cli(['backup', '--config', env.configPath, '--json']);
    expectExit(result, 1);
    expect(jsonOut(result)).toMatchObject({
      error: { code: 'STORAGE', path: storePath(), message: expect.stringContaining('is not a lethe store (it has no .lethe-store') as string },
    });
    expect(await readdir(storePath())).toEqual([]);
  });

  it('init marks the directory (also an existing one, as after an upgrade), and the marker is never an object', async () => {
    const init = await env.cli(['init', '--config', env.configPath]);
    expectExit(init, 0);
    const marker = JSON.parse(await readFile(join(storePath(), '.lethe-store'), 'utf8')) as { format: string };
    expect(marker.format).toBe('lethe.store.v1');
    expectExit(await env.cli(['backup', '--config', env.configPath]), 0);
    const store = await openStore({ type: 'filesystem', path: storePath() });
    try {
      const keys: string[] = [];
      for await (const o of store.list('')) keys.push(o.key);
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.filter((k) => k.startsWith('.'))).toEqual([]);
    } finally {
      await store.close();
    }
    // Init again is a no-op for the store.
    expectExit(await env.cli(['init', '--config', env.configPath]), 0);
    expect((JSON.parse(await readFile(join(storePath(), '.lethe-store'), 'utf8')) as { format: string }).format).toBe('lethe.store.v1');
  });

  it('a store directory this user cannot write to is reported as such (EACCES), not as a missing directory', async () => {
    // Run as `nobody` when the tests run as root (root writes anywhere): the deployment's files
    // become nobody's, the store's directories stay root's, readable and not writable.
    const user = userInfo().uid === 0 ? nobody() : undefined;
    if (user !== undefined) await chownTree(env.dir, user.uid, user.gid);
    await chmodDirs(storePath(), 0o555);
    if (user !== undefined) await chownTree(storePath(), 0, 0);
    try {
      const result = await env.cli(['backup', '--config', env.configPath], user === undefined ? {} : { uid: user.uid, gid: user.gid });
      expectExit(result, 1);
      const line = oneLine(result);
      expect(line).toContain(`storage path ${storePath()} is not writable by this user (uid ${user?.uid ?? userInfo().uid})`);
      expect(line).toContain('permission denied (EACCES)');
      expect(line).not.toContain('ENOENT');
    } finally {
      await chmodDirs(storePath(), 0o700);
      if (user !== undefined) await chownTree(env.dir, 0, 0);
    }
  });

  it('a store on a read-only mount is reported as read-only (EROFS), not as ENOENT … mkdir', async () => {
    // A real read-only file system: a tmpfs mounted read-write for init, then remounted read-only.
    const mountPoint = join(env.dir, 'ro-mount');
    await mkdir(mountPoint);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0755', 'tmpfs', mountPoint], { encoding: 'utf8' });
    if (mounted.status !== 0) {
      throw new Error(`this test mounts a tmpfs (run it as root, or with CAP_SYS_ADMIN): ${mounted.stderr}`);
    }
    try {
      const raw = { ...env.raw, storage: { type: 'filesystem', path: 'ro-mount/store' } };
      const configPath = await env.writeConfig('ro.yaml', raw);
      expectExit(await env.cli(['init', '--config', configPath]), 0);
      const remount = spawnSync('mount', ['-o', 'remount,ro', mountPoint], { encoding: 'utf8' });
      expect(remount.status, remount.stderr).toBe(0);
      const result = await env.cli(['backup', '--config', configPath]);
      expectExit(result, 1);
      const line = oneLine(result);
      expect(line).toContain(`storage path ${join(mountPoint, 'store')} is not writable by this user`);
      expect(line).toContain('its file system is mounted read-only; mount it read-write');
      expect(line).not.toContain('ENOENT');
    } finally {
      spawnSync('umount', [mountPoint]);
    }
  });
});
