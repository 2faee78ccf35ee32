import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createFilesystemStore, openStore } from '../../../src/storage/index.ts';
import { expectLetheError, listAll, runConformance, type OpenedStore } from './conformance.ts';

/** Reads a stored object with node:fs directly; null when there is no file. */
async function readObject(root: string, key: string): Promise<Uint8Array | null> {
  try {
    return new Uint8Array(await readFile(join(root, ...key.split('/'))));
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/** Every file under `dir`, relative, or [] when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((entry) => entry.isFile())
      .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1));
  } catch {
    return [];
  }
}

const text = (value: string) => new Uint8Array(Buffer.from(value));

runConformance('filesystem', async () => {
  const base = await mkdtemp(join(tmpdir(), 'lethe-fs-store-'));
  const open = async (): Promise<OpenedStore> => {
    const root = join(base, randomBytes(4).toString('hex'));
    const store = await createFilesystemStore({ path: root });
    return {
      store,
      inspect: (key) => readObject(root, key),
      leaveIncomplete: async (key) => {
        const temp = `${join(root, '.incomplete', ...key.split('/'))}.0123456789abcdef.tmp`;
        await mkdir(dirname(temp), { recursive: true });
        await writeFile(temp, 'half an object');
      },
    };
  };
  return {
    // No parts on a filesystem; the same sizes as the S3 runs keep the bodies comparable.
    partSize: 5 * 1024 * 1024,
    quirks: new Set(),
    open,
    // Every filesystem store keeps (emulated) locks.
    openLocking: open,
    teardown: () => rm(base, { recursive: true, force: true }),
  };
});

describe('filesystem store', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'lethe-fs-only-'));
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });
  const freshRoot = () => join(base, randomBytes(4).toString('hex'), 'nested', 'root');

  it('creates its root with mode 0700 (when init asks), files with 0600, and describes itself as a file URL', async () => {
    const root = freshRoot();
    await expect(openStore({ type: 'filesystem', path: root })).rejects.toMatchObject({ code: 'STORAGE', message: expect.stringContaining('does not exist') as string });
    const store = await openStore({ type: 'filesystem', path: root }, { create: true });
    expect(store.kind).toBe('filesystem');
    expect(store.description).toBe(pathToFileURL(root).href);
    expect((await stat(root)).mode & 0o777).toBe(0o700);
    await store.put('packs/ab/id1', text('data'));
    expect((await stat(join(root, 'packs', 'ab', 'id1'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, 'packs', 'ab'))).mode & 0o777).toBe(0o700);
    expect(await filesUnder(join(root, '.incomplete'))).toEqual([]);
  });

  it('writes through a temp file in .incomplete/ that the key never shows', async () => {
    const root = freshRoot();
    const store = await createFilesystemStore({ path: root });
    const controller = new AbortController();
    let resume = (): void => undefined;
    const gate = new Promise<void>((resolve) => (resume = resolve));
    const body = (async function* () {
      yield text('first half ');
      await gate;
      yield text('second half');
    })();
    const put = store.put('snapshots/s1.json', body, { signal: controller.signal });
    await expect.poll(() => filesUnder(join(root, '.incomplete'))).toHaveLength(1);
    const [temp] = await filesUnder(join(root, '.incomplete'));
    expect(temp).toMatch(/^snapshots\/s1\.json\.[0-9a-f]{16}\.tmp$/);
    expect(await readObject(root, 'snapshots/s1.json')).toBeNull();
    expect(await listAll(store, '')).toEqual([]);
    resume();
    expect((await put).size).toBe(22);
    expect(Buffer.from((await readObject(root, 'snapshots/s1.json')) ?? []).toString()).toBe(
      'first half second half',
    );
    expect(await filesUnder(join(root, '.incomplete'))).toEqual([]);
  });

  it('leaves no temp file behind when a put is aborted', async () => {
    const root = freshRoot();
    const store = await createFilesystemStore({ path: root });
    const controller = new AbortController();
    const body = (async function* () {
      yield text('some bytes');
      controller.abort();
      await new Promise<never>(() => undefined);
    })();
    await expectLetheError(
      store.put('a/b', body, { signal: controller.signal }),
      ErrorCode.ABORTED,
    );
    expect(await filesUnder(join(root, '.incomplete'))).toEqual([]);
    expect(await readObject(root, 'a/b')).toBeNull();
  });

  it('explains why a key cannot be both an object and a prefix of another', async () => {
    const store = await createFilesystemStore({ path: freshRoot() });
    await store.put('k/a', text('object'));
    await expectLetheError(
      store.put('k/a/b', text('x')),
      ErrorCode.STORAGE,
      /cannot both be an object/,
    );
    await store.put('j/a/b', text('object'));
    await expectLetheError(
      store.put('j/a', text('x')),
      ErrorCode.STORAGE,
      /cannot both be an object/,
    );
    expect((await listAll(store, '')).map((info) => info.key)).toEqual(['j/a/b', 'k/a']);
  });

  it('cleanupIncomplete leaves files that are not its temp files alone', async () => {
    const root = freshRoot();
    const store = await createFilesystemStore({ path: root });
    await mkdir(join(root, '.incomplete'), { recursive: true });
    await writeFile(join(root, '.incomplete', 'README'), 'not a temp file');
    expect(await store.cleanupIncomplete('')).toBe(0);
    expect(await filesUnder(join(root, '.incomplete'))).toEqual(['README']);
  });

  describe('object lock, emulated with a lock record', () => {
    const start = new Date('2031-05-01T00:00:00.000Z');
    const until = new Date('2031-06-01T12:00:00.000Z');
    let now = start;
    let root: string;
    const open = () => createFilesystemStore({ path: root, now: () => now });

    beforeAll(() => {
      root = freshRoot();
    });

    it('records the lock beside the object', async () => {
      const store = await open();
      await store.put('packs/aa/locked', text('worm'), {
        lock: { mode: 'COMPLIANCE', retainUntil: until },
      });
      const record: unknown = JSON.parse(
        await readFile(join(root, '.locks', 'packs', 'aa', 'locked.json'), 'utf8'),
      );
      expect(record).toEqual({ mode: 'COMPLIANCE', retainUntil: until.toISOString() });
      expect((await listAll(store, '')).map((info) => info.key)).toEqual(['packs/aa/locked']);
    });

    it('refuses delete and overwrite until the date, naming it', async () => {
      const store = await open();
      now = new Date(until.getTime() - 1);
      await expectLetheError(
        store.delete('packs/aa/locked'),
        ErrorCode.STORAGE,
        /under COMPLIANCE lock until 2031-06-01T12:00:00\.000Z/,
      );
      await expectLetheError(
        store.put('packs/aa/locked', text('rewritten')),
        ErrorCode.STORAGE,
        /lock until 2031-06-01T12:00:00\.000Z/,
      );
      expect(Buffer.from((await readObject(root, 'packs/aa/locked')) ?? []).toString()).toBe(
        'worm',
      );
      expect(await filesUnder(join(root, '.incomplete'))).toEqual([]);
    });

    it('allows delete once the date has passed, removing the record too', async () => {
      const store = await open();
      now = until;
      await store.delete('packs/aa/locked');
      expect(await readObject(root, 'packs/aa/locked')).toBeNull();
      expect(await filesUnder(join(root, '.locks'))).toEqual([]);
    });

    it('holds GOVERNANCE locks the same way (no bypass)', async () => {
      now = start;
      const store = await open();
      await store.put('g/obj', text('x'), { lock: { mode: 'GOVERNANCE', retainUntil: until } });
      await expectLetheError(store.delete('g/obj'), ErrorCode.STORAGE, /GOVERNANCE lock until/);
      expect(await readObject(root, 'g/obj')).not.toBeNull();
    });

    it('treats an unreadable lock record as locked', async () => {
      now = start;
      const store = await open();
      await store.put('c/obj', text('x'));
      await mkdir(join(root, '.locks', 'c'), { recursive: true });
      await writeFile(join(root, '.locks', 'c', 'obj.json'), '{"mode":"COMPLIANCE"');
      await expectLetheError(store.delete('c/obj'), ErrorCode.STORAGE, /unreadable/);
      expect(await readObject(root, 'c/obj')).not.toBeNull();
    });

    it('extends a lock by rewriting its record, and refuses delete until the new date', async () => {
      now = start;
      const store = await open();
      await store.put('x/obj', text('x'), { lock: { mode: 'COMPLIANCE', retainUntil: until } });
      const later = new Date(until.getTime() + 7 * 86_400_000);
      await store.extendRetention('x/obj', { mode: 'COMPLIANCE', retainUntil: later });
      const record: unknown = JSON.parse(
        await readFile(join(root, '.locks', 'x', 'obj.json'), 'utf8'),
      );
      expect(record).toEqual({ mode: 'COMPLIANCE', retainUntil: later.toISOString() });
      expect(await filesUnder(join(root, '.incomplete'))).toEqual([]);
      now = new Date(until.getTime() + 1);
      await expectLetheError(store.delete('x/obj'), ErrorCode.STORAGE, /lock until/);
      await expectLetheError(
        store.extendRetention('x/obj', {
          mode: 'COMPLIANCE',
          retainUntil: new Date(until.getTime() + 2),
        }),
        ErrorCode.STORAGE,
        /cannot be shortened/,
      );
      now = later;
      await store.delete('x/obj');
      expect(await readObject(root, 'x/obj')).toBeNull();
    });

    it('drops an expired record when the key is put again without a lock', async () => {
      now = start;
      const store = await open();
      const soon = new Date(start.getTime() + 1000);
      await store.put('e/obj', text('v1'), { lock: { mode: 'COMPLIANCE', retainUntil: soon } });
      now = new Date(soon.getTime() + 1);
      await store.put('e/obj', text('v2'));
      expect(await filesUnder(join(root, '.locks', 'e'))).toEqual([]);
      now = start;
      await store.delete('e/obj');
      expect(await readObject(root, 'e/obj')).toBeNull();
    });
  });
});
