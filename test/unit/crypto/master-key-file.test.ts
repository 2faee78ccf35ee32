import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  generateKeyPair,
  readMasterKeyFile,
  recipientOf,
  writeMasterKeyFile,
} from '../../../src/crypto/index.ts';
import { allMessages, letheError } from './support.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lethe-master-key-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function keyFile(name: string, text: string, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text, { mode });
  await chmod(path, mode);
  return path;
}

describe('writeMasterKeyFile', () => {
  it('creates an age-keygen style file with mode 0600 that reads back', async () => {
    const path = join(dir, 'master.key');
    const { recipient } = await writeMasterKeyFile(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const text = await readFile(path, 'utf8');
    expect(text).toMatch(
      /^# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n# public key: age1[a-z0-9]{58}\nAGE-SECRET-KEY-1[A-Z0-9]{58}\n$/,
    );
    expect(text).toContain(`# public key: ${recipient}\n`);
    const key = await readMasterKeyFile(path);
    expect(key.recipient).toBe(recipient);
    expect(recipientOf(key.identity)).toBe(recipient);
    expect(text).toContain(`\n${key.identity}\n`);
  });

  it('refuses to overwrite an existing file, leaving it untouched', async () => {
    const path = join(dir, 'master.key');
    await writeMasterKeyFile(path);
    const before = await readFile(path, 'utf8');
    const err = await letheError(() => writeMasterKeyFile(path), ErrorCode.MASTER_KEY);
    expect(err.message).toContain(`${path} already exists`);
    expect(await readFile(path, 'utf8')).toBe(before);
  });

  it('reports a directory that does not exist', async () => {
    const path = join(dir, 'missing', 'master.key');
    const err = await letheError(() => writeMasterKeyFile(path), ErrorCode.MASTER_KEY);
    expect(err.message).toContain(path);
  });
});

describe('readMasterKeyFile', () => {
  const { identity, recipient } = generateKeyPair();
  const secret = identity.slice(16);

  it('reads a file with comments and blank lines', async () => {
    const path = await keyFile(
      'k',
      `# created: x\n\n# public key: ${recipient}\r\n${identity}\n\n`,
    );
    expect(await readMasterKeyFile(path)).toEqual({ identity, recipient });
  });

  it.each(['644', '640', '604', '660', '620', '602'])(
    'refuses mode %s, naming the path and the chmod fix',
    async (octal) => {
      const path = await keyFile('k', `${identity}\n`, parseInt(octal, 8));
      const err = await letheError(() => readMasterKeyFile(path), ErrorCode.MASTER_KEY);
      expect(err.message).toContain(`chmod 600 ${path}`);
      expect(err.message).toContain(`mode 0${octal}`);
      expect(allMessages(err)).not.toContain(secret);
    },
  );

  it.each(['600', '400', '700'])('accepts owner-only mode %s', async (octal) => {
    const path = await keyFile('k', `${identity}\n`, parseInt(octal, 8));
    expect((await readMasterKeyFile(path)).identity).toBe(identity);
  });

  it.each([
    ['no identity', '# only a comment\n', /holds 0 identities/],
    ['two identities', `${identity}\n${generateKeyPair().identity}\n`, /holds 2 identities/],
    ['a garbage line', `${identity}\n${secret}\n`, /line 2: neither a comment/],
    [
      'a bad checksum',
      `${identity.slice(0, -1)}${identity.endsWith('Q') ? 'P' : 'Q'}\n`,
      /line 1: malformed/,
    ],
    ['a post-quantum identity', `AGE-SECRET-KEY-PQ-1${secret}\n`, /line 1: malformed/],
  ])('refuses a file with %s, never echoing key material', async (_, text, why) => {
    const path = await keyFile('k', text);
    const err = await letheError(() => readMasterKeyFile(path), ErrorCode.MASTER_KEY);
    expect(err.message).toMatch(why);
    expect(err.message).toContain(path);
    expect(allMessages(err)).not.toContain(secret);
  });

  it('refuses a missing file and a directory', async () => {
    const missing = join(dir, 'nope.key');
    const err = await letheError(() => readMasterKeyFile(missing), ErrorCode.MASTER_KEY);
    expect(err.message).toContain(`${missing} does not exist`);
    const sub = join(dir, 'sub');
    await mkdir(sub, { mode: 0o700 });
    const notFile = await letheError(() => readMasterKeyFile(sub), ErrorCode.MASTER_KEY);
    expect(notFile.message).toContain('not a regular file');
  });
});
