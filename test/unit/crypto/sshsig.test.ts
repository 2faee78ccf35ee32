import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSshPublicKey, verifySshSignature } from '../../../src/crypto/index.ts';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';

const run = promisify(execFile);

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof LetheError ? err.code : `not a LetheError: ${String(err)}`;
  }
  return 'no error';
}

/** SSHSIG verification against signatures made by the real `ssh-keygen -Y sign`. */
describe('SSHSIG (OpenSSH PROTOCOL.sshsig) with ssh-keygen', () => {
  let dir = '';
  let publicKey = '';
  const message = 'lethe-approval v1\naction: erase.request\nreason: "GDPR Art. 17 \\"#1\\""\n';
  let signature = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-sshsig-'));
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ann@example', '-f', join(dir, 'k')]);
    publicKey = await readFile(join(dir, 'k.pub'), 'utf8');
    await writeFile(join(dir, 'm'), message);
    await run('ssh-keygen', ['-Y', 'sign', '-f', join(dir, 'k'), '-n', 'lethe-approval', join(dir, 'm')]);
    signature = await readFile(join(dir, 'm.sig'), 'utf8');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses a public key line with the fingerprint ssh-keygen -l prints', async () => {
    const key = parseSshPublicKey(publicKey, 'k.pub');
    const printed = (await run('ssh-keygen', ['-l', '-f', join(dir, 'k.pub')])).stdout.split(' ')[1];
    expect(key.fingerprint).toBe(printed);
    expect(publicKey.startsWith(`${key.line} `)).toBe(true);
    expect(key.raw).toHaveLength(32);
  });

  it('verifies a real signature and names its key', () => {
    const check = verifySshSignature(signature, new TextEncoder().encode(message), 'lethe-approval');
    expect(check.key.fingerprint).toBe(parseSshPublicKey(publicKey, 'k').fingerprint);
    expect(check.hashAlgorithm).toBe('sha512');
  });

  it('verifies a sha256 signature too (ssh-keygen -O hashalg=sha256)', async () => {
    // A fresh file name each time: ssh-keygen asks before overwriting FILE.sig.
    await writeFile(join(dir, 'm256'), message);
    await run('ssh-keygen', ['-Y', 'sign', '-O', 'hashalg=sha256', '-f', join(dir, 'k'), '-n', 'lethe-approval', join(dir, 'm256')], { timeout: 20_000 });
    const sig = await readFile(join(dir, 'm256.sig'), 'utf8');
    expect(sig).not.toBe(signature);
    expect(verifySshSignature(sig, new TextEncoder().encode(message), 'lethe-approval').key.line).toBe(parseSshPublicKey(publicKey, 'k').line);
  });

  it('refuses a changed message, another namespace, garbage and other key types', async () => {
    const bytes = new TextEncoder().encode(message.replace('#1', '#2'));
    expect(codeOf(() => verifySshSignature(signature, bytes, 'lethe-approval'))).toBe(ErrorCode.REFUSED);
    expect(codeOf(() => verifySshSignature(signature, new TextEncoder().encode(message), 'file'))).toBe(ErrorCode.REFUSED);
    expect(codeOf(() => verifySshSignature(publicKey, new TextEncoder().encode(message), 'lethe-approval'))).toBe(ErrorCode.USAGE);
    expect(codeOf(() => verifySshSignature('', new Uint8Array(), 'lethe-approval'))).toBe(ErrorCode.USAGE);
    // One flipped bit anywhere in the blob never verifies.
    const body = signature.split('\n').slice(1, -2).join('');
    const blob = Buffer.from(body, 'base64');
    for (let i = 0; i < blob.length; i += 7) {
      const bad = Buffer.from(blob);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      const armored = `-----BEGIN SSH SIGNATURE-----\n${bad.toString('base64')}\n-----END SSH SIGNATURE-----\n`;
      expect([ErrorCode.REFUSED, ErrorCode.USAGE, ErrorCode.KEY]).toContain(codeOf(() => verifySshSignature(armored, new TextEncoder().encode(message), 'lethe-approval')));
    }
    await run('ssh-keygen', ['-q', '-t', 'ecdsa', '-N', '', '-f', join(dir, 'e')], { timeout: 20_000 });
    expect(codeOf(() => parseSshPublicKey('ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x', 'rsa.pub'))).toBe(ErrorCode.KEY);
    const ecdsaPub = await readFile(join(dir, 'e.pub'), 'utf8');
    expect(codeOf(() => parseSshPublicKey(ecdsaPub, 'e.pub'))).toBe(ErrorCode.KEY);
    await writeFile(join(dir, 'me'), message);
    await run('ssh-keygen', ['-Y', 'sign', '-f', join(dir, 'e'), '-n', 'lethe-approval', join(dir, 'me')], { timeout: 20_000 });
    const ecdsaSig = await readFile(join(dir, 'me.sig'), 'utf8');
    expect(codeOf(() => verifySshSignature(ecdsaSig, new TextEncoder().encode(message), 'lethe-approval'))).toBe(ErrorCode.KEY);
  });
});
