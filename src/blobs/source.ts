import { constants } from 'node:fs';
import { open, readlink, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseBlobStoreUrl, type BlobStoreConfig } from '../config/index.ts';
import { ErrorCode, LetheError, isLetheError } from '../errors/index.ts';
import { createS3Store, type ObjectStore } from '../storage/index.ts';
import { isInside, locationProblem } from './location.ts';

/** Why a blob could not be read: gone, refused (permissions, not a file), or outside its store. */
export type BlobProblemKind = 'missing' | 'unreadable' | 'escapes';

/** A blob opened for reading, or why it cannot be. */
export type BlobRead =
  | { readonly ok: true; readonly body: AsyncIterable<Uint8Array> }
  | { readonly ok: false; readonly kind: BlobProblemKind; readonly problem: string };

/**
 * A chat service's store of file bytes, read-only: lethe opens one location at a time and
 * never lists or writes it (GetObject on S3; open and fstat in a directory).
 */
export interface BlobSource {
  /** `file:///dir` or `s3://bucket/prefix`, never credentials. */
  readonly description: string;
  /**
   * Opens the blob at `location`. Never throws for the blob itself: a location that is not
   * a relative key, a file that is gone, a symbolic link, something that is not a regular
   * file, or one whose real path leaves the store come back as `ok: false`. Throws
   * (STORAGE, ABORTED) only for failures of the store as a whole (network, credentials
   * refused for every object would still show per blob). Iterating the body to its end, or
   * stopping early, releases the file or connection.
   */
  read(location: string, signal?: AbortSignal): Promise<BlobRead>;
  close(): Promise<void>;
}

const READ_CHUNK = 1 << 20;

/**
 * Opens the blob store `config` names. A directory must exist (STORAGE naming it
 * otherwise: a store that is not there would make every blob a finding); an S3 store makes
 * no request until the first read. Throws CONFIG_INVALID for an unusable URL.
 */
export async function openBlobSource(name: string, config: BlobStoreConfig): Promise<BlobSource> {
  const where = parseBlobStoreUrl(config.url);
  if ('problem' in where) throw new LetheError(ErrorCode.CONFIG_INVALID, `chatStore.blobStores.${name}.url: ${where.problem}`);
  if (where.kind === 'file') {
    let root: string;
    try {
      root = await realpath(where.dir);
      if (!(await stat(root)).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new LetheError(
        ErrorCode.STORAGE,
        `blob store "${name}" (${where.dir}) is not a readable directory: fix chatStore.blobStores.${name}.url or the directory's permissions`,
        { cause: err },
      );
    }
    return directorySource(root);
  }
  if (config.accessKeyId === undefined || config.secretAccessKey === undefined) {
    throw new LetheError(ErrorCode.CONFIG_INVALID, `chatStore.blobStores.${name}: an s3:// store needs accessKeyId and secretAccessKey`);
  }
  return s3Source(blobS3Store(where, { ...config, accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey }));
}

/**
 * The object store at `where` (a bucket and prefix) with a blob store entry's endpoint,
 * region, credentials and retries: what a blob source reads and an S3 restore target writes.
 */
export function blobS3Store(
  where: { readonly bucket: string; readonly prefix: string },
  config: BlobStoreConfig & { readonly accessKeyId: string; readonly secretAccessKey: string },
): ObjectStore {
  return createS3Store({
    bucket: where.bucket,
    prefix: where.prefix,
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    accessKeyId: config.accessKeyId,
    secretAccessKey: config.secretAccessKey,
    retry: config.retry,
    ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
    ...(config.sessionToken === undefined ? {} : { sessionToken: config.sessionToken }),
    ...(config.caFile === undefined ? {} : { caFile: config.caFile }),
  });
}


function directorySource(root: string): BlobSource {
  return {
    description: `file://${root}`,
    async read(location: string): Promise<BlobRead> {
      const problem = locationProblem(location);
      if (problem !== null) return { ok: false, kind: 'escapes', problem: `location ${problem}` };
      const path = join(root, location);
      if (!isInside(root, path)) return { ok: false, kind: 'escapes', problem: 'location leaves the store' };
      let handle;
      try {
        // O_NOFOLLOW: a symbolic link as the last component is refused, never followed.
        handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return { ok: false, kind: 'missing', problem: 'no such file' };
        if (code === 'ELOOP') return { ok: false, kind: 'escapes', problem: 'is a symbolic link (not followed)' };
        return { ok: false, kind: 'unreadable', problem: `cannot open it (${code ?? 'error'})` };
      }
      try {
        const info = await handle.stat();
        if (!info.isFile()) {
          await handle.close();
          return { ok: false, kind: 'unreadable', problem: 'is not a regular file' };
        }
        // The path the kernel opened, after every directory symlink: it must still be inside.
        const real = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => realpath(path));
        if (!isInside(root, real)) {
          await handle.close();
          return { ok: false, kind: 'escapes', problem: 'a directory on its path is a symbolic link out of the store' };
        }
      } catch (err) {
        await handle.close().catch(() => undefined);
        return { ok: false, kind: 'unreadable', problem: `cannot stat it (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
      }
      return { ok: true, body: handle.createReadStream({ highWaterMark: READ_CHUNK }) };
    },
    close: () => Promise.resolve(),
  };
}

function s3Source(store: ObjectStore): BlobSource {
  return {
    description: store.description,
    async read(location: string, signal?: AbortSignal): Promise<BlobRead> {
      const problem = locationProblem(location);
      if (problem !== null) return { ok: false, kind: 'escapes', problem: `location ${problem}` };
      try {
        return { ok: true, body: await store.get(location, signal === undefined ? {} : { signal }) };
      } catch (err) {
        if (isLetheError(err, ErrorCode.NOT_FOUND)) return { ok: false, kind: 'missing', problem: 'no such object' };
        if (isLetheError(err, ErrorCode.ABORTED)) throw err;
        return { ok: false, kind: 'unreadable', problem: isLetheError(err) ? err.message : 'the store refused the read' };
      }
    },
    close: () => store.close(),
  };
}
