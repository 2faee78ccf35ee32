import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, realpath, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseBlobStoreUrl, type BlobStoreConfig } from '../config/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { isInside, locationProblem } from './location.ts';
import { blobS3Store } from './source.ts';

/**
 * Where a restore writes files back: a directory or an S3 bucket and prefix. Each file goes
 * to its original location key under the target, and becomes visible only complete (a temp
 * file renamed, or one S3 upload), so a cell whose authentication fails leaves nothing.
 */
export interface BlobTarget {
  readonly description: string;
  /**
   * Writes `body` at `location`, replacing a file already there. Throws INTEGRITY for a
   * location that is not a relative key or whose directory leads out of the target (a
   * symbolic link), STORAGE when the write fails; whatever `body` throws (the AEAD check at
   * its end) is rethrown after the partial file is removed.
   */
  write(location: string, body: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<{ size: number }>;
  close(): Promise<void>;
}

/**
 * Opens the target `url` (`file:///dir`, a directory path, or `s3://bucket/prefix`). An S3
 * target takes its endpoint and credentials from `s3`: the settings of the config's blob
 * store on the same bucket ({@link blobTargetSettings}). A directory is created if missing.
 * Throws USAGE naming the fix.
 */
export async function openBlobTarget(url: string, s3?: BlobStoreConfig): Promise<BlobTarget> {
  const where = parseBlobStoreUrl(url);
  if ('problem' in where) throw new LetheError(ErrorCode.USAGE, `--blob-target: ${where.problem}`);
  if (where.kind === 'file') {
    await mkdir(where.dir, { recursive: true });
    return directoryTarget(await realpath(where.dir));
  }
  if (s3?.accessKeyId === undefined || s3.secretAccessKey === undefined) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--blob-target s3://${where.bucket}/…: no entry under chatStore.blobStores names bucket ${where.bucket}, so lethe has no endpoint or credentials for it: ` +
        'add one (e.g. `restored: { url: s3://BUCKET/prefix, endpoint, accessKeyId: ${…}, secretAccessKey: ${…} }`, with write access) (docs/mapping.md)',
    );
  }
  const store = blobS3Store(where, { ...s3, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
  return {
    description: store.description,
    async write(location, body, signal) {
      const problem = locationProblem(location);
      if (problem !== null) throw new LetheError(ErrorCode.INTEGRITY, `blob location ${JSON.stringify(location)} ${problem}`);
      const stored = await store.put(location, body, signal === undefined ? {} : { signal });
      return { size: stored.size };
    },
    close: () => store.close(),
  };
}

function directoryTarget(root: string): BlobTarget {
  return {
    description: `file://${root}`,
    async write(location, body) {
      const problem = locationProblem(location);
      if (problem !== null) throw new LetheError(ErrorCode.INTEGRITY, `blob location ${JSON.stringify(location)} ${problem}`);
      const path = join(root, location);
      await mkdir(dirname(path), { recursive: true });
      const parent = await realpath(dirname(path));
      if (parent !== root && !isInside(root, parent)) {
        throw new LetheError(ErrorCode.INTEGRITY, `blob location ${JSON.stringify(location)} leads out of the target through a symbolic link: refused`);
      }
      const temp = join(parent, `.lethe-restore-${randomBytes(8).toString('hex')}`);
      const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      let size = 0;
      try {
        for await (const chunk of body) {
          size += chunk.length;
          await handle.write(chunk);
        }
        await handle.sync();
        await handle.close();
        await rename(temp, join(parent, location.split('/').at(-1) ?? ''));
      } catch (err) {
        await handle.close().catch(() => undefined);
        await rm(temp, { force: true });
        throw err;
      }
      return { size };
    },
    close: () => Promise.resolve(),
  };
}

/**
 * The connection settings an s3:// blob target uses: those of the first entry under
 * `chatStore.blobStores` whose URL names the same bucket (its prefix does not matter), or
 * undefined. A file target needs none.
 */
export function blobTargetSettings(url: string, stores: Readonly<Record<string, BlobStoreConfig>>): BlobStoreConfig | undefined {
  const target = parseBlobStoreUrl(url);
  if ('problem' in target || target.kind !== 's3') return undefined;
  return Object.values(stores).find((store) => {
    const where = parseBlobStoreUrl(store.url);
    return !('problem' in where) && where.kind === 's3' && where.bucket === target.bucket;
  });
}
