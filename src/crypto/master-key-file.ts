import { open, unlink, type FileHandle } from 'node:fs/promises';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { generateKeyPair, recipientOf } from './keys.ts';

/** The master key as read from its file. */
export interface MasterKey {
  readonly identity: string;
  readonly recipient: string;
}

const IDENTITY_PREFIX = 'AGE-SECRET-KEY-';

/**
 * Creates a new master key file at `path` in age-keygen's format, mode 0600, and returns its
 * recipient. The file is created exclusively and synced before returning. Throws
 * LetheError(MASTER_KEY) if `path` already exists (a master key is never overwritten) or
 * cannot be created; a partly written file is removed.
 */
export async function writeMasterKeyFile(path: string): Promise<{ recipient: string }> {
  const { identity, recipient } = generateKeyPair();
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const text = `# created: ${created}\n# public key: ${recipient}\n${identity}\n`;
  let handle: FileHandle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') {
      throw new LetheError(
        ErrorCode.MASTER_KEY,
        `master key file ${path} already exists; lethe never overwrites a master key. Keep using it, or choose another path`,
        { cause: err },
      );
    }
    throw wrapForeign(ErrorCode.MASTER_KEY, `creating master key file ${path}`, err);
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw wrapForeign(ErrorCode.MASTER_KEY, `writing master key file ${path}`, err);
  }
  await handle.close();
  return { recipient };
}

/**
 * Reads the master key file at `path` (age-keygen format: comments, blank lines, exactly one
 * `AGE-SECRET-KEY-1...` line). Throws LetheError(MASTER_KEY) when the file is missing,
 * unreadable, not a regular file, accessible by group or others (the message gives the
 * `chmod 600` fix), or does not hold exactly one valid identity. Messages never contain the
 * identity.
 */
export async function readMasterKeyFile(path: string): Promise<MasterKey> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new LetheError(
        ErrorCode.MASTER_KEY,
        `master key file ${path} does not exist; check the path in the config, or create a new master key there`,
        { cause: err },
      );
    }
    throw wrapForeign(ErrorCode.MASTER_KEY, `opening master key file ${path}`, err);
  }
  try {
    // Checked on the open handle, so the file read is the file checked.
    const stats = await handle.stat();
    if (!stats.isFile()) {
      throw new LetheError(ErrorCode.MASTER_KEY, `master key file ${path} is not a regular file`);
    }
    if ((stats.mode & 0o077) !== 0) {
      const mode = (stats.mode & 0o777).toString(8).padStart(4, '0');
      throw new LetheError(
        ErrorCode.MASTER_KEY,
        `master key file ${path} is accessible by group or others (mode ${mode}); run \`chmod 600 ${path}\``,
      );
    }
    return parseIdentityFile(path, await handle.readFile('utf8'));
  } catch (err) {
    throw wrapForeign(ErrorCode.MASTER_KEY, `reading master key file ${path}`, err);
  } finally {
    await handle.close();
  }
}

function parseIdentityFile(path: string, text: string): MasterKey {
  const found: { line: number; identity: string }[] = [];
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (!line.startsWith(IDENTITY_PREFIX)) {
      throw new LetheError(
        ErrorCode.MASTER_KEY,
        `master key file ${path}, line ${index + 1}: neither a comment nor an age identity`,
      );
    }
    found.push({ line: index + 1, identity: line });
  }
  const [only, ...more] = found;
  if (only === undefined || more.length > 0) {
    throw new LetheError(
      ErrorCode.MASTER_KEY,
      `master key file ${path} holds ${found.length} identities; expected exactly one`,
    );
  }
  try {
    return { identity: only.identity, recipient: recipientOf(only.identity) };
  } catch (err) {
    // recipientOf's messages never contain the identity.
    const why = err instanceof Error ? err.message : 'invalid';
    throw new LetheError(
      ErrorCode.MASTER_KEY,
      `master key file ${path}, line ${only.line}: ${why}`,
    );
  }
}

function errnoCode(err: unknown): unknown {
  return err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
}
