import { execFile } from 'node:child_process';
import { chown, readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Certificates made by the real `openssl` binary, for tests that run servers with TLS: a CA,
 * and server certificates it signs for chosen names. EC P-256 keys; nothing here is secret
 * beyond the test that made it.
 */

export interface CertFiles {
  /** PEM certificate. */
  readonly cert: string;
  /** PEM private key (mode 0600). */
  readonly key: string;
}

/** A self-signed CA called `name`, valid for a year, in `dir`. */
export async function createCa(dir: string, name: string): Promise<CertFiles> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '365', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key };
}

/**
 * A server certificate for `altNames` (OpenSSL form: `IP:127.0.0.1`, `DNS:db.example.com`)
 * signed by `ca`, valid for `days`, in `dir` as `<name>.pem` and `<name>.key`.
 */
export async function issueServerCert(
  dir: string,
  ca: CertFiles,
  name: string,
  altNames: readonly string[],
  days = 365,
): Promise<CertFiles> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await run('openssl', [
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', csr, '-subj', `/CN=${name}`,
  ]);
  await writeFile(
    ext,
    `subjectAltName=${altNames.join(',')}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  await run('openssl', [
    'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial',
    '-out', cert, '-days', String(days), '-extfile', ext,
  ]);
  return { cert, key };
}

/**
 * Makes `files` readable by the PostgreSQL server, which refuses a key file anyone else can
 * read: when tests run as root the embedded server runs as `postgres`, so the files become
 * its own (mode 0600); otherwise they are already ours.
 */
export async function handToPostgres(files: CertFiles): Promise<void> {
  if (userInfo().uid !== 0) return;
  const passwd = await readFile('/etc/passwd', 'utf8');
  const fields = passwd.split('\n').find((l) => l.startsWith('postgres:'))?.split(':');
  const uid = Number(fields?.[2]);
  const gid = Number(fields?.[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('no postgres user to hand the key to');
  await chown(files.key, uid, gid);
  await chown(files.cert, uid, gid);
}
