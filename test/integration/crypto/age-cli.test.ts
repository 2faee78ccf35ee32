import { randomBytes } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  FastX25519Identity,
  generateKeyPair,
  generateRawKeyPair,
  newEphemeral,
  publicKeyOf,
  readMasterKeyFile,
  recipientOf,
  sharedSecret,
  writeMasterKeyFile,
  x25519PrivateKeyPem,
} from '../../../src/crypto/index.ts';
import { chunked, collect, expectSameBytes, letheError } from '../../unit/crypto/support.ts';
import { identityFile, privateTempDir, run } from './age-cli.ts';

const SIZES = [0, 1, 1000, 65535, 65536, 65537, 131072, 1024 * 1024 + 7];

let dir: string;
beforeEach(async () => {
  dir = await privateTempDir();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('lethe → age CLI', () => {
  it.each(SIZES)('age -d opens encryptBytes output of %i bytes', async (size) => {
    const key = generateKeyPair();
    const plain = randomBytes(size);
    const cipher = await encryptBytes(plain, [generateKeyPair().recipient, key.recipient]);
    const keyPath = await identityFile(dir, 'key', key.identity);
    expectSameBytes(await run('age', ['-d', '-i', keyPath], cipher), plain);
  });

  it.each([0, 65536, 1024 * 1024 + 7])(
    'age -d opens encryptStream output of %i bytes',
    async (size) => {
      const key = generateKeyPair();
      const plain = randomBytes(size);
      const cipher = await collect(
        encryptStream(chunked(plain, [1, 4095, 70_000]), [key.recipient]),
      );
      const keyPath = await identityFile(dir, 'key', key.identity);
      expectSameBytes(await run('age', ['-d', '-i', keyPath], cipher), plain);
    },
  );

  it('age -d refuses a truncated file from lethe, as lethe does', async () => {
    const key = generateKeyPair();
    const cipher = await encryptBytes(randomBytes(70_000), [key.recipient]);
    const keyPath = await identityFile(dir, 'key', key.identity);
    await expect(run('age', ['-d', '-i', keyPath], cipher.subarray(0, -1))).rejects.toThrow(
      /age exited 1/,
    );
  });
});

describe('age CLI → lethe', () => {
  it.each(SIZES)('decryptBytes and decryptStream open age -r output of %i bytes', async (size) => {
    const key = generateKeyPair();
    const plain = randomBytes(size);
    const cipher = await run('age', ['-r', key.recipient], plain);
    expectSameBytes(await decryptBytes(cipher, [key.identity]), plain);
    const streamed = await collect(decryptStream(chunked(cipher, [333, 65_552]), [key.identity]));
    expectSameBytes(streamed, plain);
  });

  it('rejects a modified or truncated age CLI file with CRYPTO', async () => {
    const key = generateKeyPair();
    const cipher = await run('age', ['-r', key.recipient], randomBytes(100_000));
    const modified = Buffer.from(cipher);
    modified[modified.length - 1000] = (modified[modified.length - 1000] ?? 0) ^ 1;
    await letheError(() => decryptBytes(modified, [key.identity]), ErrorCode.CRYPTO);
    await letheError(
      () => collect(decryptStream(chunked(cipher.subarray(0, -17)), [key.identity])),
      ErrorCode.CRYPTO,
    );
  });
});

describe('keys', () => {
  it('age-keygen identities work with FastX25519Identity', async () => {
    const text = (await run('age-keygen', [])).toString();
    const identity = /^AGE-SECRET-KEY-1\S+$/m.exec(text)?.[0] ?? '';
    const publicKey = /^# public key: (age1\S+)$/m.exec(text)?.[1];
    expect(new FastX25519Identity(identity).recipient).toBe(publicKey);
    expect(recipientOf(identity)).toBe(publicKey);
    const cipher = await run('age', ['-r', publicKey ?? ''], Buffer.from('from the CLI'));
    expect(Buffer.from(await decryptBytes(cipher, [identity])).toString()).toBe('from the CLI');
  });

  it('age-keygen -y derives the same recipient from generateKeyPair identities', async () => {
    for (let i = 0; i < 5; i++) {
      const key = generateKeyPair();
      const keyPath = await identityFile(dir, `key${i}`, key.identity);
      expect((await run('age-keygen', ['-y', keyPath])).toString()).toBe(`${key.recipient}\n`);
    }
  });

  it('readMasterKeyFile reads an age-keygen -o file', async () => {
    const path = join(dir, 'master.key');
    await run('age-keygen', ['-o', path]);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const key = await readMasterKeyFile(path);
    expect(`# public key: ${key.recipient}`).toBe(
      (await readFile(path, 'utf8')).split('\n').find((l) => l.startsWith('# public key:')),
    );
  });

  it('age uses a writeMasterKeyFile file as an identity file', async () => {
    const path = join(dir, 'master.key');
    const { recipient } = await writeMasterKeyFile(path);
    expect((await run('age-keygen', ['-y', path])).toString()).toBe(`${recipient}\n`);
    const cipher = await encryptBytes(Buffer.from('to the master'), [recipient]);
    expect((await run('age', ['-d', '-i', path], cipher)).toString()).toBe('to the master');
  });
});

/** The SubjectPublicKeyInfo PEM of a raw X25519 public key, as a DR script builds it from the manifest's hex. */
function publicKeyPem(raw: Uint8Array): string {
  const der = Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), raw]);
  return `-----BEGIN PUBLIC KEY-----\n${der.toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

describe('dimension keys and the stock tools (the disaster-recovery path)', () => {
  it('a master-wrapped dimension key opens with age -d into a PKCS#8 key that openssl reads', async () => {
    const master = generateKeyPair();
    const dimension = generateRawKeyPair();
    const wrapped = await encryptBytes(Buffer.from(x25519PrivateKeyPem(dimension.privateKey)), [master.recipient]);
    const masterPath = await identityFile(dir, 'master.key', master.identity);
    const pem = await run('age', ['-d', '-i', masterPath], wrapped);
    const der = await run('openssl', ['pkey', '-pubout', '-outform', 'DER'], pem);
    expectSameBytes(der.subarray(der.length - 32), publicKeyOf(dimension.privateKey));
    expectSameBytes(der.subarray(der.length - 32), dimension.publicKey);
  });

  it('openssl pkeyutl -derive computes the shared secret lethe derives cell keys from', async () => {
    const dimension = generateRawKeyPair();
    const ephemeral = newEphemeral();
    const keyPath = join(dir, 'dimension.pem');
    const peerPath = join(dir, 'ephemeral.pub.pem');
    await writeFile(keyPath, x25519PrivateKeyPem(dimension.privateKey), { mode: 0o600 });
    await writeFile(peerPath, publicKeyPem(ephemeral.publicKey));
    const derived = await run('openssl', ['pkeyutl', '-derive', '-inkey', keyPath, '-peerkey', peerPath]);
    expectSameBytes(derived, sharedSecret(ephemeral.privateKey, dimension.publicKey, 'test'));
  });
});
