import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, lifecycleApply, restore, verify } from '../../../src/jobs/tasks.ts';
import { createLetheEnv, expectExit, filesUnder, jsonOut, vaultRowsText, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';

/**
 * Issue 12, item 2: files outside the database. A small store of our own (users, and
 * uploads whose `location` column points into a directory blob store) backed up three
 * times; then a held user's old file survives a retention shred that takes another user's,
 * and an erased user's files are gone from every snapshot while everyone else's restore
 * byte for byte. Missing files and locations that escape the store are findings (exit 3)
 * with the row's key, never a crash or a read outside the store.
 */

const DDL = `
CREATE TABLE public.users (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, name text NOT NULL);
CREATE TABLE public.uploads (
  id bigint PRIMARY KEY,
  tenant_id bigint NOT NULL,
  owner_id bigint NOT NULL REFERENCES public.users (id),
  created_at timestamptz NOT NULL,
  location text
);
INSERT INTO public.users VALUES (10, 1, 'ann'), (11, 1, 'ben'), (12, 1, 'cat'), (20, 2, 'dan');
`;

const MAPPING = {
  tables: {
    users: { class: 'profiles', primaryKey: ['id'], tenant: 'tenant_id', author: 'id' },
    uploads: {
      class: 'attachments',
      primaryKey: ['id'],
      tenant: 'tenant_id',
      author: 'owner_id',
      timestamp: { column: 'created_at', type: 'timestamptz' },
      blob: { column: 'location', store: 'files' },
    },
  },
};

/** "Now" for the retention run: January 2025 is past 365 days, 2026 is not. */
const NOW = new Date('2026-12-01T00:00:00Z');

const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** A file's bytes, different per name and version, some larger than one read chunk. */
function content(name: string, version: number, size = 3000): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 32) createHash('sha256').update(`${name}/${version}/${i}`).digest().copy(out, i);
  return out;
}

describe('files outside the database (directory blob store)', () => {
  let template: TestDatabase;
  let chat: TestDatabase;
  let env: LetheEnv;
  let files: string;
  /** Per snapshot: location → sha256 of the file as that snapshot took it. */
  const taken: Record<string, string>[] = [];
  let lastWarnings: string[] = [];
  const snapshots: string[] = [];
  const sql = async (text: string): Promise<void> => {
    const client = new pg.Client({ connectionString: chat.url });
    await client.connect();
    try {
      await client.query(text);
    } finally {
      await client.end();
    }
  };
  const put = async (location: string, bytes: Buffer): Promise<void> => {
    await mkdir(join(files, location, '..'), { recursive: true });
    await writeFile(join(files, location), bytes);
  };
  const backupJson = async (code: number): Promise<{ snapshotId: string; blobs: Record<string, number>; findings: { table: string; primaryKey: Record<string, string>; location: string; kind: string }[] }> => {
    const out = await env.cli(['backup', '--config', env.configPath, '--json']);
    expectExit(out, code);
    return jsonOut(out) as never;
  };
  /** Restores `snapshot` with its files into a new database and directory; location → sha256. */
  const restoreFiles = async (snapshot: string, name: string): Promise<Record<string, string>> => {
    const db = await env.database('blob_rs');
    const dir = join(env.dir, name);
    const result = await restore(env.rt, { snapshot, targetUrl: db.url, replace: false, actor: 'test', blobTarget: `file://${dir}` });
    lastWarnings = result.warnings;
    const out: Record<string, string> = {};
    for (const path of await filesUnder(dir)) out[path] = sha(await readFile(join(dir, path)));
    expect(result.blobs).toBe(Object.keys(out).length);
    return out;
  };

  beforeAll(async () => {
    template = await createTestDatabase('blob_tpl');
    const c = new pg.Client({ connectionString: template.url });
    await c.connect();
    await c.query(DDL);
    await c.end();
    chat = await createTestDatabase('blob_chat', template.name);
    env = await createLetheEnv({
      template: template.name,
      config: {
        chatStore: { database: { url: chat.url }, mapping: MAPPING, blobStores: { files: { url: 'files' } } },
        retention: { classes: { attachments: '365d' } },
      },
    });
    files = join(env.dir, 'files');
    await mkdir(files);
    await initialize(env.rt, 'test');
  }, 120_000);

  afterAll(async () => {
    await env.cleanup();
    await chat.drop();
    await template.drop();
  });

  it('backs up each referenced file as a cell under its row\'s keys', async () => {
    const rows: [number, number, number, string, string | null][] = [
      [100, 1, 10, '2026-01-10', 'ann/a.bin'],
      [101, 1, 10, '2026-02-10', 'ann/b.bin'],
      [102, 1, 11, '2026-01-11', 'ben/c.bin'],
      [103, 1, 12, '2025-01-12', 'cat/old.bin'],
      [109, 1, 11, '2025-01-13', 'ben/old.bin'],
      [104, 1, 11, '2026-01-14', null],
      [200, 2, 20, '2026-01-15', 'dan/e f.bin'],
    ];
    for (const [, , , , location] of rows) if (location !== null) await put(location, content(location, 1));
    await put('ann/a.bin', content('ann/a.bin', 1, 300_000));
    await sql(
      `INSERT INTO public.uploads VALUES ${rows.map(([id, t, o, d, l]) => `(${id}, ${t}, ${o}, '${d}T12:00:00Z', ${l === null ? 'NULL' : `'${l}'`})`).join(', ')}`,
    );
    const first = await backupJson(0);
    expect(first.blobs).toMatchObject({ files: 6, written: 6, reused: 0, findings: 0 });
    snapshots.push(first.snapshotId);
    const state: Record<string, string> = {};
    for (const [, , , , l] of rows) if (l !== null) state[l] = sha(await readFile(join(files, l)));
    taken.push(state);

    // The vault records blob cells under the row's tuple key: the same dimension keys.
    const vaultCells = await env.cli(['verify', '--config', env.configPath, '--json']);
    expectExit(vaultCells, 0);
    expect((jsonOut(vaultCells) as { blobsByTable: Record<string, number> }).blobsByTable).toEqual({ uploads: 6 });
  }, 120_000);

  it('references unchanged files and writes changed ones when their segment is read', async () => {
    // ben's file changes in place; a new row in the same segment makes the backup read it.
    await put('ben/c.bin', content('ben/c.bin', 2));
    await put('ben/g.bin', content('ben/g.bin', 1));
    await sql(`INSERT INTO public.uploads VALUES (108, 1, 11, '2026-01-16T12:00:00Z', 'ben/g.bin')`);
    const second = await backupJson(0);
    // Segment (1, 2026-01) is read: ann/a.bin unchanged (referenced, not written), ben/c.bin
    // changed, ben/g.bin new; the other segments' files are referenced without being read.
    expect(second.blobs).toMatchObject({ files: 7, written: 2, reused: 5, findings: 0 });
    snapshots.push(second.snapshotId);
    taken.push({ ...taken[0], 'ben/c.bin': sha(content('ben/c.bin', 2)), 'ben/g.bin': sha(content('ben/g.bin', 1)) });
  }, 120_000);

  it('reports missing files and locations that leave the store as findings with the row key (exit 3)', async () => {
    await writeFile(join(env.dir, 'secret.txt'), 'outside the store');
    await symlink(join(env.dir, 'secret.txt'), join(files, 'ben', 'link.bin'));
    await symlink(env.dir, join(files, 'up'));
    await sql(`INSERT INTO public.uploads VALUES
      (105, 1, 11, '2026-01-17T12:00:00Z', 'ben/missing.bin'),
      (106, 1, 11, '2026-01-18T12:00:00Z', '../secret.txt'),
      (107, 1, 11, '2026-01-19T12:00:00Z', 'ben/link.bin'),
      (110, 1, 11, '2026-01-20T12:00:00Z', 'up/secret.txt'),
      (111, 1, 11, '2026-01-21T12:00:00Z', '/etc/hostname')`);
    const third = await backupJson(3);
    snapshots.push(third.snapshotId);
    taken.push({ ...taken[1] });
    const byId: Record<string, unknown> = Object.fromEntries(third.findings.map((f) => [f.primaryKey['id'] ?? '', f]));
    expect(byId['105']).toMatchObject({ table: 'uploads', kind: 'missing', location: 'ben/missing.bin' });
    expect(byId['106']).toMatchObject({ kind: 'escapes', location: '../secret.txt' });
    expect(byId['107']).toMatchObject({ kind: 'escapes' });
    expect(byId['110']).toMatchObject({ kind: 'escapes' });
    expect(byId['111']).toMatchObject({ kind: 'escapes' });
    expect(third.blobs['findings']).toBe(5);
    // Locations name files (often after their uploader): not in the vault's stats or audit log.
    const vaultText = await vaultRowsText(env.vaultDb.url);
    expect(vaultText).toContain('uploads.blob/1/2026-01');
    expect(vaultText).not.toContain('missing.bin');
    // The snapshot is complete: every cell in it checks out, and verify names the files it lacks.
    const checked = await verify(env.rt, { snapshot: third.snapshotId, actor: 'test' });
    expect(checked.cellsFailed).toBe(0);
    expect(checked.ok).toBe(false);
    expect(checked.findings.map((f) => `${f.code} ${f.subject}`).sort()).toEqual(
      ['105', '106', '107', '110', '111'].map((id) => `BLOB_NOT_BACKED_UP table uploads (id="${id}")`),
    );
    // Nothing from outside the store was read into it.
    const restored = await restoreFiles(third.snapshotId, 'restore-findings');
    expect(restored).toEqual(taken[2]);
    expect(Object.values(restored)).not.toContain(sha(Buffer.from('outside the store')));
    expect(lastWarnings.join('\n')).toContain('5 file(s) outside the database were missing or unreadable');
    // Human output names the row.
    const human = await env.cli(['backup', '--config', env.configPath]);
    expectExit(human, 3);
    expect(human.stdout).toContain('missing: table uploads (id="105")');
  }, 120_000);

  it('refuses to restore a snapshot with files without --blob-target, naming the flag', async () => {
    const db = await env.database('blob_nt');
    const out = await env.cli(['restore', '--config', env.configPath, '--snapshot', snapshots[0] ?? '', '--target', db.url]);
    expectExit(out, 2);
    expect(out.stderr).toContain('--blob-target');
  }, 60_000);

  it('keeps a held user\'s files through a retention shred that takes another\'s', async () => {
    const hold = await env.cli([
      'hold', 'place', '--config', env.configPath, '--case', 'CASE-9', '--tenant', '1', '--user', '12',
      '--reason', 'litigation', '--actor', 'legal-ann', '--json',
    ]);
    expectExit(hold, 0);
    const applied = await lifecycleApply(env.rt, { actor: 'test', now: () => NOW });
    expect(applied.keysDestroyed).toBeGreaterThan(0);
    const restored = await restoreFiles(snapshots[0] ?? '', 'restore-retention');
    expect(restored['cat/old.bin']).toBe(taken[0]?.['cat/old.bin']);
    expect(restored['ben/old.bin']).toBeUndefined();
    // The case's export holds the held user's file, at its location.
    const out = join(env.dir, 'export-case');
    expectExit(await env.cli(['export', '--config', env.configPath, '--case', 'CASE-9', '--out', out, '--json']), 0);
    expect(sha(await readFile(join(out, 'files', 'uploads', 'cat', 'old.bin')))).toBe(taken[0]?.['cat/old.bin']);
    expect(await filesUnder(join(out, 'files'))).toEqual(['uploads/cat/old.bin']);
    for (const t of taken) delete t['ben/old.bin'];
  }, 180_000);

  it('erases a user\'s files in every snapshot; everyone else\'s restore byte for byte', async () => {
    const request = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', '1', '--user', '10', '--reason', 'GDPR Art. 17', '--actor', 'alice', '--json']);
    expectExit(request, 0);
    const { id } = jsonOut(request) as { id: string };
    expectExit(await env.cli(['erase', 'approve', id, '--config', env.configPath, '--actor', 'bob', '--json']), 0);
    for (const [i, snapshot] of snapshots.entries()) {
      const restored = await restoreFiles(snapshot, `restore-erased-${i}`);
      const expected = Object.fromEntries(Object.entries(taken[i] ?? {}).filter(([location]) => !location.startsWith('ann/')));
      expect(restored).toEqual(expected);
    }
    // A backup now still reads ann's rows from the chat store, and leaves their files out as shredded.
    const after = await backup(env.rt, { actor: 'test' });
    expect(after.blobs.shredded).toBeGreaterThanOrEqual(2);
  }, 240_000);

  it('refuses a blob column that is not text, or a store the config lacks, before reading anything', async () => {
    const raw = env.raw as { chatStore: { mapping: typeof MAPPING } };
    const withBlob = (blob: { column: string; store: string }): unknown => ({
      ...env.raw,
      chatStore: { ...raw.chatStore, mapping: { tables: { ...MAPPING.tables, uploads: { ...MAPPING.tables.uploads, blob } } } },
    });
    const notText = await env.cli(['backup', '--config', await env.writeConfig('not-text.yaml', withBlob({ column: 'owner_id', store: 'files' }))]);
    expectExit(notText, 2);
    expect(notText.stderr).toContain('tables.uploads.blob.column: column "uploads.owner_id" is bigint, not text or varchar');
    const noStore = await env.cli(['backup', '--config', await env.writeConfig('no-store.yaml', withBlob({ column: 'location', store: 'media' }))]);
    expectExit(noStore, 2);
    expect(noStore.stderr).toContain('blob store "media" is not configured (configured: files): add it under chatStore.blobStores');
  }, 60_000);

  it('cleans up', async () => {
    await rm(join(files, 'up'));
  });
});
