import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';

/** PostgreSQL's default `scram_iterations`. */
const ITERATIONS = 4096;
const SALT_BYTES = 16;
/** Shorter than this is refused: these are service passwords, generated, never typed. */
export const MIN_ROLE_PASSWORD_LENGTH = 16;

const VERIFIER = /^SCRAM-SHA-256\$(\d{1,7}):([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2}):([A-Za-z0-9+/]+={0,2})$/;

/**
 * Throws USAGE unless `password` is printable ASCII of at least
 * {@link MIN_ROLE_PASSWORD_LENGTH} characters. ASCII keeps PostgreSQL's SASLprep of the
 * password the identity, so the verifier computed here is the one the server checks
 * against. The message names the role and the rule, never the password.
 */
export function checkRolePassword(password: string, role: string, source: string): void {
  if (!/^[\x20-\x7e]*$/.test(password)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `the password for ${role} (${source}) has characters outside printable ASCII: use a generated one such as ` +
        '`openssl rand -base64 24`',
    );
  }
  if (password.length < MIN_ROLE_PASSWORD_LENGTH) {
    throw new LetheError(
      ErrorCode.USAGE,
      `the password for ${role} (${source}) is shorter than ${MIN_ROLE_PASSWORD_LENGTH} characters: use a generated ` +
        'one such as `openssl rand -base64 24`',
    );
  }
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802 / RFC 7677, in the
 * text form of `pg_authid.rolpassword`): what `ALTER ROLE … PASSWORD` is given instead of
 * the password, as psql's `\password` does, so the password itself never reaches the
 * server, its logs or `pg_stat_activity`. `password` must have passed
 * {@link checkRolePassword}.
 */
export function scramSha256Verifier(
  password: string,
  salt: Uint8Array = randomBytes(SALT_BYTES),
  iterations: number = ITERATIONS,
): string {
  const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
  return `SCRAM-SHA-256$${iterations}:${b64(salt)}$${b64(storedKey)}:${b64(serverKey)}`;
}

/** True when `text` has the form of a SCRAM-SHA-256 verifier (safe to splice into SQL as a literal). */
export function isScramVerifier(text: string): boolean {
  return VERIFIER.test(text);
}

/**
 * True when `verifier` (a stored `rolpassword`) accepts `password`; false when it does not
 * or is not a SCRAM-SHA-256 verifier (an md5 hash, null). Constant time in the comparison.
 */
export function scramVerifierAccepts(verifier: string | null, password: string): boolean {
  const m = verifier === null ? null : VERIFIER.exec(verifier);
  if (m === null) return false;
  const [, iterations, salt, stored, server] = m;
  if (iterations === undefined || salt === undefined || stored === undefined || server === undefined) return false;
  const again = scramSha256Verifier(password, Buffer.from(salt, 'base64'), Number(iterations));
  const expected = Buffer.from(verifier ?? '', 'utf8');
  const actual = Buffer.from(again, 'utf8');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
