import { ErrorCode, LetheError } from '../errors/index.ts';
import { createOwnerOnlyFile, readOwnerOnlyFile } from './private-file.ts';
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
  await createOwnerOnlyFile(path, text, ErrorCode.MASTER_KEY, 'master key file');
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
  return parseIdentityFile(path, await readOwnerOnlyFile(path, ErrorCode.MASTER_KEY, 'master key file'));
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

