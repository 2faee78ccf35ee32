import { open, unlink, type FileHandle } from 'node:fs/promises';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';

/**
 * Key files (the master key, the signing keys) are read and written the same way: created
 * exclusively with mode 0600 and synced, never overwritten; read only when they are regular
 * files that nobody but their owner can access. `label` names the file in messages ("master
 * key file", "backup signing key file"); messages never contain the file's content.
 */

/**
 * Creates `path` with `text`, mode 0600, exclusively, and syncs it. Throws LetheError(`code`)
 * when it exists (a key file is never overwritten) or cannot be written; a partly written
 * file is removed.
 */
export async function createOwnerOnlyFile(path: string, text: string, code: ErrorCode, label: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') {
      throw new LetheError(
        code,
        `${label} ${path} already exists; lethe never overwrites a key file. Keep using it, or choose another path`,
        { cause: err },
      );
    }
    throw wrapForeign(code, `creating ${label} ${path}`, err);
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw wrapForeign(code, `writing ${label} ${path}`, err);
  }
  await handle.close();
}

/**
 * The text of `path`, checked on the open handle (so the file read is the file checked) to
 * be a regular file not accessible by group or others. Throws LetheError(`code`) naming the
 * file and the fix: missing, not a regular file, too widely readable (`chmod 600`).
 */
export async function readOwnerOnlyFile(path: string, code: ErrorCode, label: string): Promise<string> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new LetheError(code, `${label} ${path} does not exist; check the path in the config (\`lethe init\` creates it)`, {
        cause: err,
      });
    }
    throw wrapForeign(code, `opening ${label} ${path}`, err);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new LetheError(code, `${label} ${path} is not a regular file`);
    if ((stats.mode & 0o077) !== 0) {
      const mode = (stats.mode & 0o777).toString(8).padStart(4, '0');
      throw new LetheError(code, `${label} ${path} is accessible by group or others (mode ${mode}); run \`chmod 600 ${path}\``);
    }
    return await handle.readFile('utf8');
  } catch (err) {
    throw wrapForeign(code, `reading ${label} ${path}`, err);
  } finally {
    await handle.close();
  }
}

export function errnoCode(err: unknown): unknown {
  return err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
}
