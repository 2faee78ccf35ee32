/**
 * lethe's error registry. Every error lethe raises carries one of these stable codes, a
 * message that names the thing and the value seen and says what to do, and (where one
 * exists) the foreign error that caused it.
 *
 * Foreign errors (pg, S3, age, the file system) are converted once, where they enter our
 * code, with {@link wrapForeign}.
 */
export const ErrorCode = {
  /** The config file is missing, unreadable, or fails validation. */
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** A `${ENV}` reference in the config names an unset variable. */
  CONFIG_SECRET_MISSING: 'CONFIG_SECRET_MISSING',
  /** A command-line argument is missing or malformed. */
  USAGE: 'USAGE',
  /** A table mapping is invalid or does not match the chat store. */
  MAPPING_INVALID: 'MAPPING_INVALID',
  /** The chat store has a table with no mapping and not listed as system data. */
  TABLE_UNMAPPED: 'TABLE_UNMAPPED',
  /** PostgreSQL (chat store, vault or restore target) failed or refused. */
  DATABASE: 'DATABASE',
  /** The vault is missing, not initialised, or in an unexpected state. */
  VAULT: 'VAULT',
  /** A key could not be created, wrapped or unwrapped. */
  KEY: 'KEY',
  /** The master key file is missing, unreadable, or too widely readable. */
  MASTER_KEY: 'MASTER_KEY',
  /** A signing key is missing, unreadable, too widely readable, or not the one the vault lists. */
  SIGNING_KEY: 'SIGNING_KEY',
  /** An age file is malformed or cannot be decrypted with the identities given. */
  CRYPTO: 'CRYPTO',
  /** The object store failed or refused. */
  STORAGE: 'STORAGE',
  /** The object asked for does not exist. */
  NOT_FOUND: 'NOT_FOUND',
  /** An object or range did not match its recorded hash or signature. */
  INTEGRITY: 'INTEGRITY',
  /** A manifest is malformed, unsigned, or fails its signature. */
  MANIFEST_INVALID: 'MANIFEST_INVALID',
  /** The snapshot named does not exist or is not complete. */
  SNAPSHOT_NOT_FOUND: 'SNAPSHOT_NOT_FOUND',
  /** A restore target already holds tables lethe would create. */
  TARGET_NOT_EMPTY: 'TARGET_NOT_EMPTY',
  /** Another run of the same job holds its lock. */
  JOB_LOCKED: 'JOB_LOCKED',
  /** A shard of a coordinated backup failed, died or never started: the snapshot was abandoned. */
  BACKUP_SHARD_FAILED: 'BACKUP_SHARD_FAILED',
  /** The audit chain is broken. */
  AUDIT_CHAIN: 'AUDIT_CHAIN',
  /** A lifecycle rule refused the operation (two-person rule, legal hold, request state). */
  REFUSED: 'REFUSED',
  /** The operation was cancelled by a signal. */
  ABORTED: 'ABORTED',
  /** The embedded PostgreSQL could not be initialised or started. */
  EMBEDDED: 'EMBEDDED',
  /** A bug: an invariant lethe relies on did not hold. */
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Process exit codes, documented in the README. */
export const ExitCode = {
  OK: 0,
  /** Unexpected failure (a bug, or a foreign error lethe did not anticipate). */
  FAILURE: 1,
  /** Bad usage or invalid config: nothing was done. */
  USAGE: 2,
  /** The check ran and found problems (verify findings, broken audit chain). */
  CHECK_FAILED: 3,
  /** Another run holds the job's lock. */
  LOCKED: 4,
  /** Interrupted by a signal. */
  ABORTED: 130,
} as const;

export class LetheError extends Error {
  override readonly name = 'LetheError';
  readonly code: ErrorCode;
  /** Extra structured facts for `--json` output; never secret values. */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
  }
}

/** True when `err` is a LetheError, optionally of the given code. */
export function isLetheError(err: unknown, code?: ErrorCode): err is LetheError {
  return err instanceof LetheError && (code === undefined || err.code === code);
}

/** The exit code an error maps to. */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof LetheError)) return ExitCode.FAILURE;
  switch (err.code) {
    case ErrorCode.CONFIG_INVALID:
    case ErrorCode.CONFIG_SECRET_MISSING:
    case ErrorCode.USAGE:
    case ErrorCode.MAPPING_INVALID:
    case ErrorCode.TABLE_UNMAPPED:
    case ErrorCode.TARGET_NOT_EMPTY:
    case ErrorCode.SNAPSHOT_NOT_FOUND:
    case ErrorCode.MASTER_KEY:
    case ErrorCode.SIGNING_KEY:
      return ExitCode.USAGE;
    case ErrorCode.INTEGRITY:
    case ErrorCode.MANIFEST_INVALID:
    case ErrorCode.AUDIT_CHAIN:
    case ErrorCode.REFUSED:
      return ExitCode.CHECK_FAILED;
    case ErrorCode.JOB_LOCKED:
      return ExitCode.LOCKED;
    case ErrorCode.ABORTED:
      return ExitCode.ABORTED;
    case ErrorCode.CRYPTO:
    case ErrorCode.DATABASE:
    case ErrorCode.EMBEDDED:
    case ErrorCode.INTERNAL:
    case ErrorCode.KEY:
    case ErrorCode.BACKUP_SHARD_FAILED:
    case ErrorCode.NOT_FOUND:
    case ErrorCode.STORAGE:
    case ErrorCode.VAULT:
      return ExitCode.FAILURE;
  }
}

/**
 * Converts a foreign error (pg, S3, age, fs) into a LetheError with the given code and a
 * message that says what lethe was doing. The foreign message is kept only as `cause`,
 * after {@link scrubSecrets} has removed anything that looks like a credential.
 * A LetheError passes through unchanged.
 */
export function wrapForeign(code: ErrorCode, doing: string, err: unknown): LetheError {
  if (err instanceof LetheError) return err;
  if (isAbortError(err)) return new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
  const detail = err instanceof Error ? err.message : String(err);
  const hint = tlsFailureHint(err);
  return new LetheError(code, `${doing}: ${scrubSecrets(detail)}${hint === undefined ? '' : `: ${hint}`}`, { cause: err });
}

const UNTRUSTED_CA =
  "the server's certificate is not signed by a CA lethe trusts: set `caFile` to the PEM file of the CA that signed it";

/** Fixes for Node's TLS verification errors, by error code. */
const TLS_HINTS: Readonly<Record<string, string>> = {
  ERR_TLS_CERT_ALTNAME_INVALID:
    "the server's certificate is not for the host name in the URL: connect by a name the certificate lists " +
    '(sslmode verify-full checks it), or, with a private CA that signs only these servers, use sslmode verify-ca',
  DEPTH_ZERO_SELF_SIGNED_CERT: UNTRUSTED_CA,
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED_CA,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED_CA,
  UNABLE_TO_GET_ISSUER_CERT: UNTRUSTED_CA,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED_CA,
  CERT_SIGNATURE_FAILURE: UNTRUSTED_CA,
  CERT_HAS_EXPIRED: "the server's certificate has expired: renew it on the server",
  CERT_NOT_YET_VALID: "the server's certificate is not valid yet: check this machine's clock and the server's",
};

/**
 * What to do about a failed TLS connection (an untrusted CA, a name mismatch, an expired
 * certificate, a server with TLS off or one that insists on it), or undefined when `err`
 * is not about TLS. Used for PostgreSQL and S3 errors alike.
 */
export function tlsFailureHint(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TLS_HINTS[code] !== undefined) return TLS_HINTS[code];
  if (/server does not support SSL/i.test(err.message)) {
    return 'the server has TLS turned off: turn it on (PostgreSQL: ssl = on), or set `sslmode: disable` (another host also needs `allowInsecure: true`)';
  }
  if (code === '28000' && /no encryption/i.test(err.message)) {
    return 'the server accepts only TLS connections: set `sslmode: verify-full` (and `caFile`)';
  }
  return undefined;
}

/** True for the errors an AbortSignal produces. */
export function isAbortError(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

/**
 * Throws when the signal has fired: ABORTED for a cancel (a signal, a caller's abort), or
 * the reason itself when lethe aborted for a reason of its own, as a LetheError of another
 * code (a job lock whose connection was lost: the run must stop, but nobody cancelled it).
 */
export function throwIfAborted(signal: AbortSignal | undefined, doing: string): void {
  if (signal?.aborted !== true) return;
  const reason: unknown = signal.reason;
  if (reason instanceof LetheError && reason.code !== ErrorCode.ABORTED) throw reason;
  throw new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
}

const SECRET_PATTERNS: readonly RegExp[] = [
  /AGE-SECRET-KEY-[0-9A-Z]+/g,
  /(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/g,
  /(password[=:]\s*)\S+/gi,
];

/**
 * Removes age identities, passwords in connection URLs and `password=` pairs from a
 * string. Used on foreign error messages before they reach users or logs.
 */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const pattern of SECRET_PATTERNS) {
    out = out.replace(pattern, (match, prefix: unknown) =>
      typeof prefix === 'string' ? `${prefix}[redacted]${match.endsWith('@') ? '@' : ''}` : '[redacted]',
    );
  }
  return out;
}
