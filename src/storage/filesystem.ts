import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { access, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCode, LetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import { assertValidKey, assertValidPrefix, compareKeys, RESERVED_TOP_LEVEL } from './keys.ts';
import { assertLockExtends, assertLockUsable, lockActive, lockedError } from './lock.ts';
import {
  abortable,
  assertRangeArguments,
  chunksOf,
  collect,
  rangePastEnd,
  Tally,
  readableChunks,
} from './streams.ts';
import type { ObjectInfo, ObjectLock, ObjectStore, PutOptions, ReadOptions } from './types.ts';

export interface FilesystemStoreOptions {
  /** Root directory, laid out like the bucket. */
  path: string;
  /** Clock used to decide whether a lock has expired; tests inject one. */
  now?: () => Date;
  /**
   * `create` (the default; `lethe init`): creates the root (mode 0700) when missing and marks
   * it as a store with {@link STORE_MARKER}. `existing` (every other command): the root must
   * be a directory that holds the marker, so that a path whose disk is not mounted is refused
   * instead of silently filling the disk beneath the mount point.
   */
  open?: 'create' | 'existing';
}

/** The file `lethe init` writes at the root of a filesystem store; never listed as an object (RESERVED_TOP_LEVEL). */
export const STORE_MARKER = '.lethe-store';

const INCOMPLETE = '.incomplete';
const LOCKS = '.locks';
/** `<key>.<16 hex>.tmp` holds a put's data, `<key>.<16 hex>.lock.tmp` its lock record. */
const TEMP_SUFFIX = /\.[0-9a-f]{16}(?:\.lock)?\.tmp$/;

/**
 * A store in a plain directory with the bucket's layout (NAS, air-gapped disk, the
 * embedded default). Puts go to `<root>/.incomplete/`, are fsynced, renamed into place,
 * and the directory is fsynced; neither `.incomplete/` nor `.locks/` is ever listed.
 *
 * Object lock cannot be enforced on a plain filesystem: anyone with write access to the
 * directory can still delete or change files. What this backend does is record a put's
 * lock in `<root>/.locks/<key>.json` (`{ mode, retainUntil }`) and make lethe itself obey
 * it: delete() and an overwriting put() of an object still under lock throw STORAGE naming
 * the date, as S3 refuses them, so lethe's retention logic behaves the same on both
 * backends. Real immutability needs S3 Object Lock or WORM media. The lock record is
 * written before the object is renamed into place, so a crash can leave a key more locked
 * than intended, never less.
 */
export async function createFilesystemStore(options: FilesystemStoreOptions): Promise<ObjectStore> {
  const root = resolve(options.path);
  if (options.open === 'existing') await assertMarkedStore(root);
  else await markStore(root);
  return new FilesystemStore(root, options.now ?? (() => new Date()));
}

/** Creates `root` if needed and writes the marker unless it is there (idempotent). */
async function markStore(root: string): Promise<void> {
  const doing = `creating the store directory ${root}`;
  try {
    await mkdir(root, { recursive: true, mode: 0o700 });
    await writeDurably(join(root, STORE_MARKER), chunksOf(Buffer.from(`${JSON.stringify({ format: 'lethe.store.v1', createdAt: new Date().toISOString() })}\n`)));
    await syncDir(root);
  } catch (err) {
    // Marked before: the store exists (and is still a directory holding the marker).
    if ((err as { code?: unknown }).code === 'EEXIST') return assertMarkedStore(root);
    throw (await notWritable(root, err)) ?? wrapForeign(ErrorCode.STORAGE, doing, err);
  }
}

/**
 * Throws STORAGE naming `lethe init` unless `root` is a directory holding the marker:
 * missing (an unmounted disk, a typo), not a directory, or never initialised.
 */
async function assertMarkedStore(root: string): Promise<void> {
  const refuse = (problem: string): LetheError =>
    new LetheError(ErrorCode.STORAGE, `storage path ${root} ${problem}`, { details: { path: root } });
  let info;
  try {
    info = await stat(root);
  } catch (err) {
    if (isMissing(err)) {
      throw refuse(
        'does not exist: lethe creates a filesystem store only in `lethe init`, so that a disk that is not mounted ' +
          'is not filled in its place; mount it or fix `storage.path`, or run `lethe init` to create a new store there',
      );
    }
    throw wrapForeign(ErrorCode.STORAGE, `opening the store directory ${root}`, err);
  }
  if (!info.isDirectory()) throw refuse('is not a directory: fix `storage.path`');
  try {
    await stat(join(root, STORE_MARKER));
  } catch (err) {
    if (!isMissing(err)) throw wrapForeign(ErrorCode.STORAGE, `opening the store directory ${root}`, err);
    throw refuse(
      `is not a lethe store (it has no ${STORE_MARKER}, which \`lethe init\` writes): if a disk belongs there, ` +
        'mount it; if this is the store of a lethe from before the marker, run `lethe init` once to mark it',
    );
  }
}

/** errno codes a write into a read-only or foreign directory fails with (a recursive mkdir on a read-only mount says ENOENT). */
const WRITE_REFUSED: ReadonlySet<string> = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT']);

/**
 * When a write under `root` failed, whether the store itself is not writable: `root` (or,
 * when it does not exist yet, its nearest existing parent) is probed with access(W_OK). A
 * STORAGE error naming the real cause (read-only file system, permission) when so, else
 * undefined (the original error stands).
 */
async function notWritable(root: string, err: unknown): Promise<LetheError | undefined> {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !WRITE_REFUSED.has(code)) return undefined;
  for (let dir = root; ; dir = dirname(dir)) {
    try {
      await access(dir, constants.W_OK);
      return undefined;
    } catch (probe) {
      const why = (probe as { code?: unknown }).code;
      if (why === 'ENOENT' && dirname(dir) !== dir) continue;
      if (why !== 'EACCES' && why !== 'EPERM' && why !== 'EROFS') return undefined;
      const cause = why === 'EROFS' ? 'its file system is mounted read-only' : `permission denied (${why})`;
      const uid = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : '';
      return new LetheError(
        ErrorCode.STORAGE,
        `storage path ${root} is not writable by this user${uid}: ${dir === root ? '' : `${dir}: `}${cause}; ` +
          (why === 'EROFS' ? 'mount it read-write' : `give the user lethe runs as write access to ${dir}`) +
          ' (a job that only reads, like verify, can use a read-only store)',
        { cause: err, details: { path: root } },
      );
    }
  }
}

/** errno codes meaning "there is no file at that path". */
function isMissing(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

/**
 * S3 can hold both `a` and `a/b`; a directory tree cannot. lethe's layout never does this,
 * so the filesystem store reports it rather than encoding around it.
 */
const CLASH = 'a key cannot both be an object and lead to other objects on a filesystem store';

function isPathClash(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR';
}

async function writeAll(handle: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset);
    offset += bytesWritten;
  }
}

/** Creates `path` (must not exist) from `chunks` and fsyncs it. */
async function writeDurably(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    for await (const chunk of chunks) await writeAll(handle, chunk);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a rename or create inside `dir` durable. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** mkdir -p, then fsyncs every directory whose entries it changed. */
async function ensureDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await syncDir(d);
    if (d === dirname(first)) return;
  }
}

/** Relative `/`-joined paths of the regular files under `dir`. */
async function walkFiles(dir: string, base: string, skipTop: readonly string[], out: string[]) {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  for (const entry of entries) {
    if (base === '' && skipTop.includes(entry.name)) continue;
    const rel = base === '' ? entry.name : `${base}/${entry.name}`;
    if (entry.isDirectory()) await walkFiles(join(dir, entry.name), rel, [], out);
    else if (entry.isFile()) out.push(rel);
  }
}

function parseLockRecord(text: string): ObjectLock | null {
  const record: unknown = JSON.parse(text);
  if (typeof record !== 'object' || record === null) return null;
  const { mode, retainUntil } = record as { mode?: unknown; retainUntil?: unknown };
  if ((mode !== 'GOVERNANCE' && mode !== 'COMPLIANCE') || typeof retainUntil !== 'string') {
    return null;
  }
  const date = new Date(retainUntil);
  return Number.isNaN(date.getTime()) ? null : { mode, retainUntil: date };
}

class FilesystemStore implements ObjectStore {
  readonly kind = 'filesystem' as const;
  readonly description: string;

  constructor(
    private readonly root: string,
    private readonly now: () => Date,
  ) {
    this.description = pathToFileURL(root).href;
  }

  private where(key: string): string {
    return `${this.description}/${key}`;
  }

  private pathOf(key: string, ...under: string[]): string {
    return join(this.root, ...under, ...key.split('/'));
  }

  private tempPath(key: string, kind: '' | '.lock'): string {
    return `${this.pathOf(key, INCOMPLETE)}.${randomBytes(8).toString('hex')}${kind}.tmp`;
  }

  private lockPath(key: string): string {
    return `${this.pathOf(key, LOCKS)}.json`;
  }

  /** The key's lock record; a record lethe cannot read fails closed as STORAGE. */
  private async readLock(key: string): Promise<ObjectLock | null> {
    let text;
    try {
      text = await readFile(this.lockPath(key), 'utf8');
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
    let lock: ObjectLock | null = null;
    try {
      lock = parseLockRecord(text);
    } catch {
      // fall through to the error below
    }
    if (lock === null) {
      throw new LetheError(
        ErrorCode.STORAGE,
        `lock record ${this.lockPath(key)} is unreadable; treating ${this.where(key)} as locked. ` +
          'Restore the record ({"mode","retainUntil"}) or remove it if the object is not under retention',
      );
    }
    return lock;
  }

  private async refuseIfLocked(key: string, doing: string): Promise<void> {
    const lock = await this.readLock(key);
    if (lock !== null && lockActive(lock, this.now())) throw lockedError(doing, lock);
  }

  async put(
    key: string,
    body: AsyncIterable<Uint8Array> | Uint8Array,
    options?: PutOptions,
  ): Promise<{ size: number; sha256: string }> {
    assertValidKey(key);
    const doing = `put ${this.where(key)}`;
    const { lock, signal } = options ?? {};
    if (lock !== undefined) assertLockUsable(lock, this.now(), doing);
    throwIfAborted(signal, doing);
    const tally = new Tally();
    const dataTemp = this.tempPath(key, '');
    const lockTemp = lock === undefined ? undefined : this.tempPath(key, '.lock');
    let lockPlaced = false;
    let committed = false;
    try {
      // Checked again before the rename; this first check only saves streaming the body.
      await this.refuseIfLocked(key, `${doing} (overwrite)`);
      await mkdir(dirname(dataTemp), { recursive: true, mode: 0o700 });
      await writeDurably(dataTemp, abortable(tally.tap(chunksOf(body)), signal, doing));
      await this.refuseIfLocked(key, `${doing} (overwrite)`);
      const target = this.pathOf(key);
      await ensureDir(dirname(target));
      if (lock !== undefined && lockTemp !== undefined) {
        const record = { mode: lock.mode, retainUntil: lock.retainUntil.toISOString() };
        await writeDurably(lockTemp, chunksOf(Buffer.from(JSON.stringify(record))));
        await ensureDir(dirname(this.lockPath(key)));
        await rename(lockTemp, this.lockPath(key));
        lockPlaced = true;
        await syncDir(dirname(this.lockPath(key)));
      }
      await rename(dataTemp, target);
      committed = true;
      await syncDir(dirname(target));
      // A record left from an expired lock must not outlive the object it was for.
      if (lock === undefined) await rm(this.lockPath(key), { force: true });
    } catch (err) {
      await rm(dataTemp, { force: true });
      if (lockTemp !== undefined) await rm(lockTemp, { force: true });
      // Once the object is in place its lock record stays, even if a later step failed.
      if (lockPlaced && !committed) await rm(this.lockPath(key), { force: true });
      throw (await notWritable(this.root, err)) ?? wrapForeign(ErrorCode.STORAGE, isPathClash(err) ? `${doing} (${CLASH})` : doing, err);
    }
    return tally.result();
  }

  /** Opens the object for reading; NOT_FOUND when there is no regular file at `key`. */
  private async openObject(
    key: string,
    doing: string,
  ): Promise<{ handle: FileHandle; size: number }> {
    const notFound = new LetheError(ErrorCode.NOT_FOUND, `${doing}: no such object`, {
      details: { key },
    });
    let handle: FileHandle;
    try {
      handle = await open(this.pathOf(key), 'r');
    } catch (err) {
      if (isMissing(err)) throw notFound;
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
    try {
      const info = await handle.stat();
      if (info.isFile()) return { handle, size: info.size };
    } catch (err) {
      await handle.close();
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
    await handle.close();
    throw notFound;
  }

  async get(key: string, options?: ReadOptions): Promise<AsyncIterable<Uint8Array>> {
    assertValidKey(key);
    const doing = `get ${this.where(key)}`;
    throwIfAborted(options?.signal, doing);
    const { handle } = await this.openObject(key, doing);
    return readableChunks(handle.createReadStream(), options?.signal, (err) =>
      wrapForeign(ErrorCode.STORAGE, doing, err),
    );
  }

  async getBytes(key: string, options?: ReadOptions): Promise<Uint8Array> {
    return collect(await this.get(key, options));
  }

  async getRange(
    key: string,
    offset: number,
    length: number,
    options?: ReadOptions,
  ): Promise<Uint8Array> {
    assertValidKey(key);
    assertRangeArguments(offset, length);
    const doing = `get ${this.where(key)} range`;
    throwIfAborted(options?.signal, doing);
    const { handle, size } = await this.openObject(key, doing);
    try {
      if (offset + length > size) throw rangePastEnd(this.where(key), offset, length, size);
      const out = new Uint8Array(length);
      let filled = 0;
      while (filled < length) {
        throwIfAborted(options?.signal, doing);
        const { bytesRead } = await handle.read(out, filled, length - filled, offset + filled);
        // The file shrank after stat: report it as the short object it now is.
        if (bytesRead === 0) throw rangePastEnd(this.where(key), offset, length, undefined);
        filled += bytesRead;
      }
      return out;
    } catch (err) {
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    } finally {
      await handle.close();
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    assertValidKey(key);
    try {
      const info = await stat(this.pathOf(key));
      return info.isFile() ? { key, size: info.size, lastModified: info.mtime } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw wrapForeign(ErrorCode.STORAGE, `head ${this.where(key)}`, err);
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    assertValidPrefix(prefix);
    // Walk only the deepest directory the prefix names; filter the rest by string.
    const base = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const keys: string[] = [];
    try {
      const dir = base === '' ? this.root : this.pathOf(base);
      await walkFiles(dir, base, RESERVED_TOP_LEVEL, keys);
    } catch (err) {
      throw wrapForeign(ErrorCode.STORAGE, `list ${this.description}/${prefix}`, err);
    }
    // Directory order is not key order ('a-b' < 'a/x' but the walk meets 'a/' first).
    const matching = keys.filter((key) => key.startsWith(prefix)).sort(compareKeys);
    for (const key of matching) {
      let info;
      try {
        info = await stat(this.pathOf(key));
      } catch (err) {
        if (isMissing(err)) continue; // deleted since the walk
        throw wrapForeign(ErrorCode.STORAGE, `list ${this.description}/${prefix}`, err);
      }
      yield { key, size: info.size, lastModified: info.mtime };
    }
  }

  /** NOT_FOUND unless a regular file is at `key`. */
  private async assertExists(key: string, doing: string): Promise<void> {
    if ((await this.head(key)) === null) {
      throw new LetheError(ErrorCode.NOT_FOUND, `${doing}: no such object`, { details: { key } });
    }
  }

  async retention(key: string): Promise<ObjectLock | null> {
    assertValidKey(key);
    const doing = `read the lock of ${this.where(key)}`;
    await this.assertExists(key, doing);
    try {
      return await this.readLock(key);
    } catch (err) {
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
  }

  /**
   * Replaces the lock record atomically (temp file, fsync, rename, fsync of the directory),
   * so a crash leaves the old record or the new one, never a torn one that would read as
   * "unreadable, treated as locked".
   */
  async extendRetention(key: string, lock: ObjectLock): Promise<void> {
    assertValidKey(key);
    const doing = `extend the lock of ${this.where(key)}`;
    assertLockUsable(lock, this.now(), doing);
    await this.assertExists(key, doing);
    const lockTemp = this.tempPath(key, '.lock');
    try {
      const current = await this.readLock(key);
      assertLockExtends(current, lock, doing);
      if (current?.retainUntil.getTime() === lock.retainUntil.getTime()) return;
      const record = { mode: lock.mode, retainUntil: lock.retainUntil.toISOString() };
      await mkdir(dirname(lockTemp), { recursive: true, mode: 0o700 });
      await writeDurably(lockTemp, chunksOf(Buffer.from(JSON.stringify(record))));
      await ensureDir(dirname(this.lockPath(key)));
      await rename(lockTemp, this.lockPath(key));
      await syncDir(dirname(this.lockPath(key)));
    } catch (err) {
      await rm(lockTemp, { force: true });
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
  }

  async delete(key: string): Promise<void> {
    assertValidKey(key);
    const doing = `delete ${this.where(key)}`;
    try {
      await this.refuseIfLocked(key, doing);
      await unlink(this.pathOf(key)).catch((err: unknown) => {
        if (!isMissing(err)) throw err;
      });
      await rm(this.lockPath(key), { force: true });
    } catch (err) {
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
  }

  async cleanupIncomplete(prefix: string): Promise<number> {
    assertValidPrefix(prefix);
    const doing = `clean up incomplete puts in ${this.description}/${prefix}`;
    try {
      const files: string[] = [];
      await walkFiles(join(this.root, INCOMPLETE), '', [], files);
      let removed = 0;
      for (const file of files) {
        const suffix = TEMP_SUFFIX.exec(file);
        if (suffix === null || !file.slice(0, suffix.index).startsWith(prefix)) continue;
        await rm(join(this.root, INCOMPLETE, ...file.split('/')), { force: true });
        removed += 1;
      }
      return removed;
    } catch (err) {
      throw wrapForeign(ErrorCode.STORAGE, doing, err);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
