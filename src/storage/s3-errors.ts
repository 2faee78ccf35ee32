import { ErrorCode, isAbortError, LetheError, scrubSecrets, tlsFailureHint } from '../errors/index.ts';

/** What lethe was doing when an S3 call failed, for the message and `details`. */
export interface S3Call {
  operation: string;
  bucket: string;
  /** The full object key (store prefix included), when the call was about one object. */
  key?: string;
  /** `s3://bucket/key` or `s3://bucket/prefix`, as shown to the operator. */
  location: string;
}

/** The fields the AWS SDK puts on its exceptions that we read. */
interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: unknown; requestId?: unknown };
}

const HINTS: Readonly<Record<string, string>> = {
  AccessDenied: 'check that this job’s credentials allow the operation on this bucket and prefix',
  InvalidAccessKeyId: 'check the access key id configured for this store',
  SignatureDoesNotMatch: 'check the secret access key and region configured for this store',
  NoSuchBucket: 'check the bucket name and region, or create the bucket',
  ECONNREFUSED: 'check the endpoint URL and that the server is running',
  ENOTFOUND: 'check the endpoint host name',
};

/**
 * Returns a function that blanks each given credential (and what scrubSecrets knows) out
 * of a text. Values shorter than 4 characters are skipped: blanking them would mangle
 * ordinary words while protecting nothing.
 */
export function credentialRedactor(
  secrets: readonly (string | undefined)[],
): (text: string) => string {
  const literal = secrets.filter((s): s is string => s !== undefined && s.length >= 4);
  return (text) => scrubSecrets(literal.reduce((out, s) => out.split(s).join('[redacted]'), text));
}

/** HTTP status of an SDK error, if it carries one. */
export function httpStatusOf(err: unknown): number | undefined {
  const status = (err as SdkErrorShape | null)?.$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The S3 error code (`NoSuchKey`, `AccessDenied`, …) or Node error code of `err`. */
export function s3CodeOf(err: unknown): string | undefined {
  const shape = err as SdkErrorShape | null;
  if (typeof shape?.code === 'string') return shape.code;
  return typeof shape?.name === 'string' ? shape.name : undefined;
}

/**
 * Converts an SDK or network error into a LetheError, once, where it enters lethe:
 * NoSuchKey / 404 → NOT_FOUND, an abort → ABORTED, anything else → STORAGE naming the
 * operation, bucket and key. Credentials never reach the result: the message is redacted,
 * and the cause is a plain Error carrying only the redacted name and message, because SDK
 * exceptions hold response fields (a signature mismatch's string-to-sign, the access key
 * id of a refused request) that a logger serialising `cause` would print.
 */
export function convertS3Error(
  err: unknown,
  call: S3Call,
  redact: (text: string) => string,
): LetheError {
  if (err instanceof LetheError) return err;
  const doing = `${call.operation} ${call.location}`;
  if (isAbortError(err)) return new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
  const status = httpStatusOf(err);
  const code = s3CodeOf(err) ?? 'Error';
  const where = { operation: call.operation, bucket: call.bucket, key: call.key };
  if (code === 'NoSuchKey' || (status === 404 && code === 'NotFound')) {
    return new LetheError(ErrorCode.NOT_FOUND, `${doing}: no such object`, { details: where });
  }
  const raw = err instanceof Error ? err.message : String(err);
  const message = redact(raw === '' ? 'no message' : raw);
  const hint = HINTS[code] ?? tlsFailureHint(err)?.replace('`caFile`', '`storage.caFile`');
  const cause = new Error(message);
  cause.name = code;
  const requestId = (err as SdkErrorShape | null)?.$metadata?.requestId;
  return new LetheError(
    ErrorCode.STORAGE,
    `${doing} failed: ${code}${status === undefined ? '' : ` (HTTP ${status})`}: ${message}` +
      (hint === undefined ? '' : `; ${hint}`),
    {
      cause,
      details: {
        ...where,
        s3Code: code,
        ...(status === undefined ? {} : { httpStatus: status }),
        ...(typeof requestId === 'string' ? { requestId } : {}),
      },
    },
  );
}
