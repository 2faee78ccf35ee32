import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectRetentionCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createHash } from 'node:crypto';
import { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { readCaFile } from '../tls/ca-file.ts';
import { assertValidKey, assertValidPrefix, compareKeys, MAX_KEY_BYTES } from './keys.ts';
import { assertLockExtends, assertLockUsable, lockActive, lockedError } from './lock.ts';
import { convertS3Error, credentialRedactor, httpStatusOf, s3CodeOf } from './s3-errors.ts';
import { backoffDelayMs, DEFAULT_S3_RETRY, retryStrategy, type S3RetryConfig } from './s3-retry.ts';
import {
  abortable,
  assertRangeArguments,
  chunksOf,
  collect,
  rangePastEnd,
  Tally,
  readableChunks,
} from './streams.ts';
import type { ObjectInfo, ObjectLock, ObjectStore, PutOptions, ReadOptions } from './types.ts';

const MIB = 1024 * 1024;
/** S3's smallest part (except the last) and largest part. */
const MIN_PART_SIZE = 5 * MIB;
const MAX_PART_SIZE = 5 * 1024 * MIB;
/** S3 never returns more than 1000 keys or uploads per page. */
const MAX_PAGE_SIZE = 1000;

/** Connection settings for an S3-compatible bucket (AWS, MinIO, Ceph, …). */
export interface S3StoreConfig {
  /** Custom endpoint URL (MinIO, …); AWS's regional endpoint when absent. */
  endpoint?: string | undefined;
  region: string;
  bucket: string;
  /** Key prefix inside the bucket; a trailing '/' is added when missing. */
  prefix?: string | undefined;
  /** Path-style URLs (`host/bucket/key`), which most non-AWS servers need. */
  forcePathStyle?: boolean | undefined;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
  /** PEM CA bundle trusted for an https endpoint instead of Node's built-in public CAs. */
  caFile?: string | undefined;
  /**
   * Multipart part size; default 8 MiB, at least 5 MiB (S3's minimum). S3 allows 10,000
   * parts, so this also caps an object's size (about 78 GiB at the default).
   */
  partSizeBytes?: number | undefined;
  /** Parts uploaded at once; default 2. Memory held is about (queueSize + 1) × part size. */
  queueSize?: number | undefined;
  /** Retries, backoff and timeouts (config `storage.retry`); {@link DEFAULT_S3_RETRY} when absent. */
  retry?: S3RetryConfig | undefined;
}

export interface S3StoreOptions extends S3StoreConfig {
  /** Keys per list() page, at most 1000 (the default); tests lower it to exercise paging. */
  listPageSize?: number | undefined;
}

function configError(message: string): LetheError {
  return new LetheError(ErrorCode.CONFIG_INVALID, `S3 store: ${message}`);
}

function checkInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw configError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/** '' or `a/b/`: the store prefix, checked with the key rules. */
function normalizePrefix(prefix: string | undefined): string {
  const bare = (prefix ?? '').replace(/\/+$/, '');
  if (bare === '') return '';
  try {
    assertValidKey(bare);
  } catch (err) {
    throw configError(`prefix ${JSON.stringify(prefix)} is not usable: ${(err as Error).message}`);
  }
  return `${bare}/`;
}

/** The endpoint as shown to operators: scheme, host and path only, never user info. */
function displayEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw configError('endpoint is not a valid URL (expected e.g. https://s3.example.com)');
  }
  const path = url.pathname === '/' ? '' : url.pathname;
  return `${url.protocol}//${url.host}${path}`;
}

/**
 * Answers of GetObjectRetention that mean "this object has no lock": the object has no
 * retention (AWS, MinIO), the bucket has no Object Lock configuration (MinIO; AWS says
 * InvalidRequest with that message), or the server does not implement Object Lock at all
 * (s3rver), in which case it cannot have locked anything either.
 */
function meansNoRetention(err: unknown): boolean {
  const code = s3CodeOf(err);
  if (
    code === 'NoSuchObjectLockConfiguration' ||
    code === 'ObjectLockConfigurationNotFoundError' ||
    code === 'NotImplemented' ||
    // 501 whatever its body says: an error answer cut short on the way still means "not implemented".
    httpStatusOf(err) === 501
  ) {
    return true;
  }
  const message = err instanceof Error ? err.message : '';
  return code === 'InvalidRequest' && /object lock configuration/i.test(message);
}

/**
 * A store in an S3 bucket, under an optional key prefix. Puts stream through
 * `@aws-sdk/lib-storage`'s Upload: a single PUT for bodies up to one part, otherwise a
 * multipart upload holding at most about (queueSize + 1) parts in memory. With a lock, the
 * upload carries Object Lock mode and retain-until date plus a SHA-256 checksum per
 * request, which S3 requires for locked writes.
 *
 * The SDK's default aws-chunked uploads with trailing checksums are turned off
 * (`requestChecksumCalculation: 'WHEN_REQUIRED'`): s3rver stores the chunk framing as the
 * object's bytes. Integrity is kept because Upload sends every part as a buffer, so SigV4
 * signs its SHA-256 (`x-amz-content-sha256`), which S3 checks.
 *
 * On a versioned (Object Lock) bucket delete() writes a delete marker: the data version
 * stays until its lock expires and the bucket's noncurrent-version expiry removes it.
 * delete() refuses, like the filesystem store, while HeadObject reports a lock in force;
 * it needs s3:GetObject and s3:DeleteObject, plus s3:GetObjectRetention for HeadObject to
 * report a lock at all (without it the server still refuses to remove locked data).
 *
 * cleanupIncomplete() relies on ListMultipartUploads. MinIO answers it only for a prefix
 * that is a whole key (minio/minio#20989) and expires stale uploads on its own instead
 * (24 h by default); s3rver does not implement it at all (STORAGE error).
 *
 * Throws CONFIG_INVALID for unusable options. Credentials never appear in `description` or
 * in errors.
 */
export function createS3Store(options: S3StoreOptions): ObjectStore {
  if (options.bucket === '') throw configError('bucket is empty');
  if (options.region === '') throw configError('region is empty (use e.g. us-east-1 for MinIO)');
  const partSize = checkInteger(
    'partSizeBytes',
    options.partSizeBytes ?? 8 * MIB,
    MIN_PART_SIZE,
    MAX_PART_SIZE,
  );
  const queueSize = checkInteger('queueSize', options.queueSize ?? 2, 1, 64);
  const pageSize = checkInteger('listPageSize', options.listPageSize ?? 1000, 1, MAX_PAGE_SIZE);
  const prefix = normalizePrefix(options.prefix);
  const endpoint = options.endpoint === undefined ? '' : ` at ${displayEndpoint(options.endpoint)}`;
  return new S3Store(createS3Client(options), {
    bucket: options.bucket,
    prefix,
    partSize,
    queueSize,
    pageSize,
    retry: options.retry ?? DEFAULT_S3_RETRY,
    description: `s3://${options.bucket}/${prefix}${endpoint}`,
    redact: credentialRedactor([
      options.accessKeyId,
      options.secretAccessKey,
      options.sessionToken,
    ]),
  });
}

/** Limits for a client that must answer quickly (`lethe doctor`); the store's own client has none. */
export interface S3ClientLimits {
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Attempts per request, the first included (the SDK's default is 3). */
  readonly maxAttempts: number;
}

/**
 * The SDK client for a store's settings: region, credentials, endpoint, path style, the
 * retry policy and timeouts of `retry` (see s3-retry.ts) and, with `caFile`, an https agent
 * that trusts that CA bundle (instead of the public CAs). The store and `lethe doctor` use
 * it, so both talk to the bucket the same way; `limits` (doctor) replaces the retry policy
 * with a short total deadline. Makes no request. Throws CONFIG_INVALID for an unreadable
 * CA file.
 */
export function createS3Client(options: S3StoreConfig, limits?: S3ClientLimits): S3Client {
  const retry = options.retry ?? DEFAULT_S3_RETRY;
  const handler = {
    ...(options.caFile === undefined
      ? {}
      : // The SDK's own agent settings (keep-alive, 50 sockets), plus the CA bundle.
        { httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 50, ca: readCaFile(options.caFile, 'storage.caFile') }) }),
    // requestTimeout alone only logs a warning in this SDK; throwOnRequestTimeout makes it a deadline.
    ...(limits === undefined
      ? {
          connectionTimeout: Math.round(retry.connectTimeoutSeconds * 1000),
          // An idle timeout, not a deadline: a large part that keeps moving is never cut off.
          socketTimeout: Math.round(retry.requestTimeoutSeconds * 1000),
        }
      : { connectionTimeout: limits.connectionTimeoutMs, requestTimeout: limits.requestTimeoutMs, throwOnRequestTimeout: true }),
  };
  const config: S3ClientConfig = {
    region: options.region,
    credentials: {
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      ...(options.sessionToken === undefined ? {} : { sessionToken: options.sessionToken }),
    },
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.forcePathStyle === undefined ? {} : { forcePathStyle: options.forcePathStyle }),
    requestHandler: handler,
    ...(limits === undefined
      ? { maxAttempts: retry.maxAttempts, retryStrategy: retryStrategy(retry) }
      : { maxAttempts: limits.maxAttempts }),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  return new S3Client(config);
}

interface S3StoreSettings {
  bucket: string;
  prefix: string;
  partSize: number;
  queueSize: number;
  pageSize: number;
  /** Attempts and backoff for what lethe itself repeats (resumed GETs, ETag mismatches). */
  retry: S3RetryConfig;
  description: string;
  redact: (text: string) => string;
}

/**
 * The client Upload drives, with two changes. Only UploadPart requests get `signal`, so a
 * cancel stops a part mid-transfer; the short requests that create or commit an object
 * (CreateMultipartUpload, the single PUT, Complete) run to the end, so a cancel never
 * leaves an upload id lethe does not know or an object that appears after put() reported
 * a cancel. PUT and UploadPart requests carry Content-MD5 and have their ETag checked (see
 * {@link sendChecked}). And a failing AbortMultipartUpload is reported through `onAbortFailure`
 * instead of replacing the error that caused it.
 */
function uploadClient(
  client: S3Client,
  maxAttempts: number,
  signal: AbortSignal,
  onSendFailure: (err: unknown) => void,
  onAbortFailure: (err: unknown) => void,
): S3Client {
  const send = async (command: Parameters<S3Client['send']>[0]): Promise<unknown> => {
    if (command instanceof PutObjectCommand || command instanceof UploadPartCommand) {
      try {
        return await sendChecked(client, command, maxAttempts, command instanceof UploadPartCommand ? signal : undefined);
      } catch (err) {
        onSendFailure(err);
        throw err;
      }
    }
    if (command instanceof AbortMultipartUploadCommand) {
      try {
        return await client.send(command);
      } catch (err) {
        onAbortFailure(err);
        return {};
      }
    }
    try {
      return await client.send(
        command,
        command instanceof UploadPartCommand ? { abortSignal: signal } : {},
      );
    } catch (err) {
      onSendFailure(err);
      throw err;
    }
  };
  return new Proxy(client, {
    get: (target, property, receiver) =>
      property === 'send' ? send : (Reflect.get(target, property, receiver) as unknown),
  });
}

/** An ETag as a bare lower-case MD5 hex, or undefined when it is not one (multipart, SSE-KMS). */
function etagMd5(etag: string | undefined): string | undefined {
  const bare = etag?.replace(/^"|"$/g, '').toLowerCase();
  return bare !== undefined && /^[0-9a-f]{32}$/.test(bare) ? bare : undefined;
}

/**
 * Sends a PUT or UploadPart with the body's MD5 as Content-MD5, so the server refuses bytes
 * that differ from what lethe sent (BadDigest), and checks the ETag it answers. On
 * unencrypted and SSE-S3 objects S3 answers the MD5 of the bytes it stored; a different
 * ETag means the answer was garbled on the way (or the server stored something else), and a
 * part's wrong ETag would otherwise go into CompleteMultipartUpload. So a mismatch is sent
 * again, up to `maxAttempts`. Servers whose ETag is not an MD5 (SSE-KMS, SSE-C, some
 * encrypting gateways) answer the same non-MD5 ETag twice: that is their scheme, and the
 * Content-MD5 check already proved the bytes, so it is accepted.
 */
async function sendChecked(
  client: S3Client,
  command: PutObjectCommand | UploadPartCommand,
  maxAttempts: number,
  signal: AbortSignal | undefined,
): Promise<unknown> {
  const options = signal === undefined ? {} : { abortSignal: signal };
  const body = command.input.Body;
  if (!(body instanceof Uint8Array)) {
    return command instanceof PutObjectCommand ? client.send(command, options) : client.send(command, options);
  }
  const md5 = createHash('md5').update(body).digest();
  const contentMd5 = md5.toString('base64');
  const expected = md5.toString('hex');
  const sendOnce = () =>
    command instanceof PutObjectCommand
      ? client.send(new PutObjectCommand({ ...command.input, ContentMD5: contentMd5 }), options)
      : client.send(new UploadPartCommand({ ...command.input, ContentMD5: contentMd5 }), options);
  let previous: string | undefined;
  for (let attempt = 1; ; attempt += 1) {
    const output = await sendOnce();
    const etag = output.ETag;
    const sse = output.ServerSideEncryption;
    if (etagMd5(etag) === expected || sse === 'aws:kms' || sse === 'aws:kms:dsse' || output.SSECustomerAlgorithm !== undefined) {
      return output;
    }
    if (previous !== undefined && etag === previous) return output;
    if (attempt >= maxAttempts) {
      throw new LetheError(
        ErrorCode.STORAGE,
        `${command instanceof PutObjectCommand ? 'put' : 'upload part'} of ${String(command.input.Key)}: the server answered ETag ` +
          `${String(etag)} ${maxAttempts} times for bytes whose MD5 is ${expected}; check the object store (or the proxy in front of it)`,
      );
    }
    previous = etag;
  }
}

class S3Store implements ObjectStore {
  readonly kind = 's3' as const;
  readonly description: string;

  constructor(
    private readonly client: S3Client,
    private readonly settings: S3StoreSettings,
  ) {
    this.description = settings.description;
  }

  /** The bucket key for a store key, after checking both. */
  private objectKey(key: string): string {
    assertValidKey(key);
    const full = this.settings.prefix + key;
    if (Buffer.byteLength(full, 'utf8') > MAX_KEY_BYTES) {
      throw new LetheError(
        ErrorCode.STORAGE,
        `invalid object key ${JSON.stringify(key)}: with the store prefix it is longer than ${MAX_KEY_BYTES} bytes`,
        { details: { key } },
      );
    }
    return full;
  }

  private location(objectKey: string): string {
    return `s3://${this.settings.bucket}/${objectKey}`;
  }

  /**
   * Runs one SDK call, converting its error once. `path` is the object key, or for
   * list-like calls (`isObject` false) the key prefix.
   */
  private async call<T>(
    operation: string,
    path: string,
    run: () => Promise<T>,
    isObject = true,
  ): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw this.convert(err, operation, path, isObject);
    }
  }

  private convert(err: unknown, operation: string, path: string, isObject = true): LetheError {
    return convertS3Error(
      err,
      {
        operation,
        bucket: this.settings.bucket,
        ...(isObject ? { key: path } : {}),
        location: this.location(path),
      },
      this.settings.redact,
    );
  }

  async put(
    key: string,
    body: AsyncIterable<Uint8Array> | Uint8Array,
    options?: PutOptions,
  ): Promise<{ size: number; sha256: string }> {
    const objectKey = this.objectKey(key);
    const doing = `put ${this.location(objectKey)}`;
    const { lock, signal } = options ?? {};
    if (lock !== undefined) assertLockUsable(lock, new Date(), doing);
    throwIfAborted(signal, doing);

    // `stop` cuts the other part uploads short once one part has failed.
    const stop = new AbortController();
    const cancel = signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
    let firstFailure: unknown;
    let abortFailure: unknown;
    const client = uploadClient(
      this.client,
      this.settings.retry.maxAttempts,
      cancel,
      (err) => {
        if (!cancel.aborted) firstFailure ??= err;
        stop.abort();
      },
      (err) => (abortFailure = err),
    );
    const tally = new Tally();
    const source = Readable.from(abortable(tally.tap(chunksOf(body)), cancel, doing));
    const upload = new Upload({
      client,
      partSize: this.settings.partSize,
      queueSize: this.settings.queueSize,
      leavePartsOnError: false,
      params: {
        Bucket: this.settings.bucket,
        Key: objectKey,
        Body: source,
        ...(lock === undefined
          ? {}
          : {
              ObjectLockMode: lock.mode,
              ObjectLockRetainUntilDate: lock.retainUntil,
              ChecksumAlgorithm: 'SHA256',
            }),
      },
    });
    try {
      await upload.done();
    } catch (err) {
      const leftover =
        abortFailure === undefined
          ? ''
          : `; its multipart upload could not be aborted (${this.convert(abortFailure, 'abort upload', objectKey).message}), ` +
            'run cleanup of incomplete uploads';
      if (signal?.aborted === true) {
        throw new LetheError(ErrorCode.ABORTED, `${doing}: cancelled, nothing stored${leftover}`);
      }
      const converted = this.convert(firstFailure ?? err, 'put', objectKey);
      if (leftover === '') throw converted;
      throw new LetheError(ErrorCode.STORAGE, `${converted.message}${leftover}`, {
        cause: converted,
      });
    } finally {
      // Releases the caller's body (e.g. a database cursor) when Upload stopped reading early.
      source.destroy();
    }
    return tally.result();
  }

  async get(key: string, options?: ReadOptions): Promise<AsyncIterable<Uint8Array>> {
    const objectKey = this.objectKey(key);
    const signal = options?.signal;
    throwIfAborted(signal, `get ${this.location(objectKey)}`);
    const output = await this.call('get', objectKey, () =>
      this.client.send(
        new GetObjectCommand({ Bucket: this.settings.bucket, Key: objectKey }),
        signal === undefined ? {} : { abortSignal: signal },
      ),
    );
    return this.resumingBody(output, objectKey, signal);
  }

  /**
   * The whole object's bytes, resumed where they broke off. The SDK retries a request only
   * until its headers arrive; a body cut short afterwards (connection reset, a stalled
   * socket, a proxy that ends the body early) is read on from the last byte received with a
   * ranged GET pinned to the same version by If-Match, up to the store's attempts. A body
   * that ends "cleanly" is checked against the object's ETag when that is the MD5 of the
   * content (single-part uploads without SSE-KMS/SSE-C) and otherwise against its
   * Content-Length, so a short read is resumed or reported, never ended as if complete.
   * Callers still check the sha256 they recorded: with a multipart ETag and a server that
   * lies about Content-Length, that check is what catches a short object.
   */
  private async *resumingBody(
    first: GetObjectCommandOutput,
    objectKey: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Uint8Array> {
    const where = this.location(objectKey);
    const etag = first.ETag;
    const sse = first.ServerSideEncryption;
    const encrypted = sse === 'aws:kms' || sse === 'aws:kms:dsse' || first.SSECustomerAlgorithm !== undefined;
    const expectedMd5 = encrypted ? undefined : etagMd5(etag);
    const expectedSize = first.ContentLength;
    const md5 = createHash('md5');
    let received = 0;
    let output: GetObjectCommandOutput = first;
    for (let attempt = 1; ; attempt += 1) {
      let failure: unknown;
      try {
        for await (const chunk of this.readBody(output.Body, objectKey, signal)) {
          received += chunk.byteLength;
          md5.update(chunk);
          yield chunk;
        }
      } catch (err) {
        if (signal?.aborted === true || (err instanceof LetheError && err.code === ErrorCode.ABORTED)) throw err;
        failure = err;
      }
      if (failure === undefined) {
        const complete =
          expectedMd5 === undefined
            ? expectedSize === undefined || received === expectedSize
            : md5.copy().digest('hex') === expectedMd5;
        if (complete) return;
        failure = new LetheError(
          ErrorCode.STORAGE,
          `get ${where}: the body ended after ${received} bytes, short of the object ` +
            `(${expectedMd5 === undefined ? `${String(expectedSize)} bytes` : `ETag ${String(etag)}`})`,
        );
      }
      if (attempt >= this.settings.retry.maxAttempts) throw failure;
      await this.pause(attempt, signal);
      let next: GetObjectCommandOutput;
      try {
        next = await this.client.send(
          new GetObjectCommand({
            Bucket: this.settings.bucket,
            Key: objectKey,
            Range: `bytes=${received}-`,
            ...(etag === undefined ? {} : { IfMatch: etag }),
          }),
          signal === undefined ? {} : { abortSignal: signal },
        );
      } catch (err) {
        if (httpStatusOf(err) === 416 || s3CodeOf(err) === 'InvalidRange') {
          // Nothing past what was read: the stored object itself does not match its ETag.
          throw new LetheError(
            ErrorCode.INTEGRITY,
            `get ${where}: the object's ${received} bytes do not match its ETag ${String(etag)}; it is damaged in the store`,
          );
        }
        if (httpStatusOf(err) === 412) {
          throw new LetheError(ErrorCode.STORAGE, `get ${where}: the object was replaced while lethe was reading it; run again`);
        }
        throw this.convert(err, 'get', objectKey);
      }
      const start = /^bytes (\d+)-/.exec(next.ContentRange ?? '')?.[1];
      if (Number(start ?? 0) !== received) {
        (next.Body as Readable | undefined)?.destroy();
        throw new LetheError(
          ErrorCode.STORAGE,
          `get ${where}: resumed at byte ${received}, the server answered ${next.ContentRange ?? 'the whole object'}`,
        );
      }
      output = next;
    }
  }

  /** Waits the backoff before lethe's own retry number `retry` of a read or write. */
  private async pause(retry: number, signal: AbortSignal | undefined): Promise<void> {
    const ms = backoffDelayMs(retry, this.settings.retry);
    await new Promise<void>((resolve) => setTimeout(resolve, ms));
    throwIfAborted(signal, 'S3 retry');
  }

  /** The response body as chunks, with stream errors converted and the socket released. */
  private readBody(
    body: unknown,
    objectKey: string,
    signal: AbortSignal | undefined,
  ): AsyncIterable<Uint8Array> {
    if (body === undefined) return chunksOf(new Uint8Array(0));
    if (!(body instanceof Readable)) {
      throw new LetheError(
        ErrorCode.INTERNAL,
        `get ${this.location(objectKey)}: body is not a Node stream`,
      );
    }
    return readableChunks(body, signal, (err) => this.convert(err, 'get', objectKey));
  }

  async getBytes(key: string, options?: ReadOptions): Promise<Uint8Array> {
    return collect(await this.get(key, options));
  }

  /**
   * A range, read again from where it broke off when the body is cut short (as for get());
   * a short body is past the end of the object (INTEGRITY) only when the server's
   * Content-Range itself ends before the range asked for.
   */
  async getRange(
    key: string,
    offset: number,
    length: number,
    options?: ReadOptions,
  ): Promise<Uint8Array> {
    const objectKey = this.objectKey(key);
    assertRangeArguments(offset, length);
    const where = this.location(objectKey);
    const signal = options?.signal;
    throwIfAborted(signal, `get ${where} range`);
    if (length === 0) {
      // HTTP cannot ask for zero bytes; the object must still exist and reach `offset`.
      const info = await this.head(key);
      if (info === null) {
        throw new LetheError(ErrorCode.NOT_FOUND, `get ${where} range: no such object`, {
          details: { key: objectKey },
        });
      }
      if (info.size < offset) throw rangePastEnd(where, offset, length, info.size);
      return new Uint8Array(0);
    }
    const last = offset + length - 1;
    const parts: Uint8Array[] = [];
    let got = 0;
    for (let attempt = 1; ; attempt += 1) {
      const from = offset + got;
      const range = `bytes=${from}-${last}`;
      let output;
      try {
        output = await this.client.send(
          new GetObjectCommand({ Bucket: this.settings.bucket, Key: objectKey, Range: range }),
          signal === undefined ? {} : { abortSignal: signal },
        );
      } catch (err) {
        // 416: the range starts at or past the end of the object.
        if (httpStatusOf(err) === 416 || s3CodeOf(err) === 'InvalidRange') {
          throw rangePastEnd(where, offset, length, undefined);
        }
        throw this.convert(err, 'get range', objectKey);
      }
      // S3 answers exactly the range; other servers may send more from the same start (s3rver
      // answers bytes=0-0 with the whole object), so check the start and read only what is asked.
      const answered = /^bytes (\d+)-(\d+)\//.exec(output.ContentRange ?? '');
      if (Number(answered?.[1] ?? 0) !== from) {
        (output.Body as Readable | undefined)?.destroy();
        throw new LetheError(
          ErrorCode.STORAGE,
          `get ${where} range: asked for ${range}, the server answered ${output.ContentRange ?? 'the whole object'}`,
        );
      }
      let failure: unknown;
      try {
        const bytes = await collect(this.readBody(output.Body, objectKey, signal), length - got);
        parts.push(bytes);
        got += bytes.byteLength;
      } catch (err) {
        if (signal?.aborted === true || (err instanceof LetheError && err.code === ErrorCode.ABORTED)) throw err;
        failure = err;
      }
      if (got === length) return parts.length === 1 && parts[0] !== undefined ? parts[0] : new Uint8Array(Buffer.concat(parts));
      // A shorter answer than the server's own Content-Range promised is a broken transfer;
      // one whose Content-Range stops short means the range ran past the end of the object.
      const promised = answered?.[2] !== undefined && Number(answered[2]) >= last;
      if (failure === undefined && !promised) throw rangePastEnd(where, offset, length, undefined);
      if (attempt >= this.settings.retry.maxAttempts) {
        throw failure instanceof Error
          ? failure
          : new LetheError(
            ErrorCode.STORAGE,
            `get ${where} range: the server promised ${range} but its body ended after ${got} of ${length} bytes, ${attempt} times`,
          );
      }
      await this.pause(attempt, signal);
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const output = await this.headObject(this.objectKey(key));
    if (output === null) return null;
    return {
      key,
      size: output.ContentLength ?? 0,
      lastModified: output.LastModified ?? new Date(0),
    };
  }

  private async headObject(objectKey: string) {
    try {
      return await this.client.send(
        new HeadObjectCommand({ Bucket: this.settings.bucket, Key: objectKey }),
      );
    } catch (err) {
      // HEAD responses have no body, so a missing key is only a bare 404.
      if (httpStatusOf(err) === 404) return null;
      throw this.convert(err, 'head', objectKey);
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    assertValidPrefix(prefix);
    const { bucket, prefix: storePrefix, pageSize } = this.settings;
    const listPrefix = storePrefix + prefix;
    let token: string | undefined;
    let previous: string | undefined;
    do {
      const page = await this.call(
        'list',
        listPrefix,
        () =>
          this.client.send(
            new ListObjectsV2Command({
              Bucket: bucket,
              Prefix: listPrefix,
              MaxKeys: pageSize,
              ...(token === undefined ? {} : { ContinuationToken: token }),
            }),
          ),
        false,
      );
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        const key = object.Key.slice(storePrefix.length);
        // Callers merge and page through listings; a misordered one would skip or repeat keys.
        if (previous !== undefined && compareKeys(previous, key) >= 0) {
          throw new LetheError(
            ErrorCode.STORAGE,
            `list ${this.location(listPrefix)}: the server returned ${JSON.stringify(key)} after ` +
              `${JSON.stringify(previous)}, out of S3's key order; this server is not S3-compatible enough for lethe`,
          );
        }
        previous = key;
        yield { key, size: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (page.IsTruncated === true && token === undefined) {
        throw new LetheError(
          ErrorCode.STORAGE,
          `list ${this.location(listPrefix)}: truncated page without a continuation token`,
        );
      }
    } while (token !== undefined);
  }

  async retention(key: string): Promise<ObjectLock | null> {
    const objectKey = this.objectKey(key);
    return this.currentRetention(objectKey, `read the lock of ${this.location(objectKey)}`);
  }

  /** NOT_FOUND when the object is absent (checked first: a bucket without locks may answer GetObjectRetention for any key alike). */
  private async currentRetention(objectKey: string, doing: string): Promise<ObjectLock | null> {
    if ((await this.headObject(objectKey)) === null) {
      throw new LetheError(ErrorCode.NOT_FOUND, `${doing}: no such object`, {
        details: { key: objectKey },
      });
    }
    let output;
    try {
      output = await this.client.send(
        new GetObjectRetentionCommand({ Bucket: this.settings.bucket, Key: objectKey }),
      );
    } catch (err) {
      if (meansNoRetention(err)) return null;
      throw this.convert(err, 'get retention', objectKey);
    }
    const { Mode: mode, RetainUntilDate: until } = output.Retention ?? {};
    if (mode === undefined && until === undefined) return null;
    if ((mode !== 'COMPLIANCE' && mode !== 'GOVERNANCE') || until === undefined) {
      throw new LetheError(
        ErrorCode.STORAGE,
        `${doing}: the server answered an object lock lethe cannot read (mode ${String(mode)}, ` +
          `retain-until ${String(until)}); treating the object as locked`,
      );
    }
    return { mode, retainUntil: until };
  }

  /**
   * Reads the current retention, checks the new one only lengthens it, then
   * PutObjectRetention. S3 itself refuses to shorten a COMPLIANCE lock; the check here also
   * keeps GOVERNANCE locks from being shortened and gives the same error as the filesystem.
   */
  async extendRetention(key: string, lock: ObjectLock): Promise<void> {
    const objectKey = this.objectKey(key);
    const doing = `extend the lock of ${this.location(objectKey)}`;
    assertLockUsable(lock, new Date(), doing);
    const current = await this.currentRetention(objectKey, doing);
    assertLockExtends(current, lock, doing);
    if (current?.retainUntil.getTime() === lock.retainUntil.getTime()) return;
    await this.call('put retention', objectKey, () =>
      this.client.send(
        new PutObjectRetentionCommand({
          Bucket: this.settings.bucket,
          Key: objectKey,
          Retention: { Mode: lock.mode, RetainUntilDate: lock.retainUntil },
        }),
      ),
    );
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    const doing = `delete ${this.location(objectKey)}`;
    const current = await this.headObject(objectKey);
    if (current === null) return;
    const { ObjectLockMode: mode, ObjectLockRetainUntilDate: until } = current;
    if ((mode === 'COMPLIANCE' || mode === 'GOVERNANCE') && until !== undefined) {
      const lock = { mode, retainUntil: until };
      if (lockActive(lock, new Date())) throw lockedError(doing, lock);
    }
    await this.call('delete', objectKey, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: objectKey })),
    );
  }

  async cleanupIncomplete(prefix: string): Promise<number> {
    assertValidPrefix(prefix);
    const { bucket, prefix: storePrefix, pageSize } = this.settings;
    const listPrefix = storePrefix + prefix;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    let removed = 0;
    for (;;) {
      const page = await this.call(
        'list incomplete uploads',
        listPrefix,
        () =>
          this.client.send(
            new ListMultipartUploadsCommand({
              Bucket: bucket,
              Prefix: listPrefix,
              MaxUploads: pageSize,
              ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
              ...(uploadIdMarker === undefined ? {} : { UploadIdMarker: uploadIdMarker }),
            }),
          ),
        false,
      );
      for (const upload of page.Uploads ?? []) {
        const { Key: objectKey, UploadId: uploadId } = upload;
        if (objectKey === undefined || uploadId === undefined) continue;
        try {
          await this.client.send(
            new AbortMultipartUploadCommand({ Bucket: bucket, Key: objectKey, UploadId: uploadId }),
          );
          removed += 1;
        } catch (err) {
          // Completed or aborted since the listing: nothing left to remove.
          if (s3CodeOf(err) !== 'NoSuchUpload') throw this.convert(err, 'abort upload', objectKey);
        }
      }
      if (page.IsTruncated !== true) return removed;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
      if (keyMarker === undefined) {
        throw new LetheError(
          ErrorCode.STORAGE,
          `list incomplete uploads ${this.location(listPrefix)}: truncated page without a marker`,
        );
      }
    }
  }

  close(): Promise<void> {
    this.client.destroy();
    return Promise.resolve();
  }
}
