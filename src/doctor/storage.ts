import {
  DeleteObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type GetBucketVersioningCommandOutput,
  type GetObjectLockConfigurationCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import type { Config, StorageConfig } from '../config/index.ts';
import { isLetheError, tlsFailureHint } from '../errors/index.ts';
import type { Runtime } from '../jobs/runtime.ts';
import { createS3Client, type ObjectStore } from '../storage/index.ts';
import { convertS3Error, credentialRedactor, httpStatusOf, s3CodeOf } from '../storage/s3-errors.ts';
import { probePeerCertificate, readCaFile } from '../tls/index.ts';
import { isLoopbackHost } from '../util/net.ts';
import { judgeCredentials, type ProbeOutcome } from './credentials.ts';
import { certificateCheck, describeError } from './database.ts';
import { check, type Check, type DoctorJob } from './types.ts';

type S3Config = Extract<StorageConfig, { type: 's3' }>;

export interface StorageCheckOptions {
  readonly job: DoctorJob;
  /** Probe writes even where the bucket's default retention would keep the probe object. */
  readonly probeWrites: boolean;
  readonly now: () => Date;
  /** The key (below the store prefix) of an object known to exist, for a read probe where nothing can be written. */
  readonly knownKey?: string | undefined;
}

const LIMITS = { connectionTimeoutMs: 5000, requestTimeoutMs: 15_000, maxAttempts: 1 };
/** Where probe objects go, below the store prefix; lifecycle never lists it. */
export const PROBE_PREFIX = 'doctor/';

function probeKey(kind: 'probe' | 'absent'): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 40) || 'host';
  return `${PROBE_PREFIX}${kind}-${host}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * The object store's checks: reachable, TLS and its certificate, versioning and Object Lock
 * (S3, where the server says), and what the configured credentials can do, by harmless
 * probes under `doctor/`: list, put a 0-byte object, read it back, delete it (or, where
 * nothing could be written, read an object known to exist and delete a key that does not).
 * On a versioned bucket the probe leaves a delete marker. Never throws.
 */
export async function checkStorage(config: Config, rt: Runtime, options: StorageCheckOptions): Promise<Check[]> {
  const storage = config.storage;
  return storage.type === 's3' ? checkS3(storage, options) : checkFilesystem(storage.path, rt, options);
}

function isDenied(err: unknown): boolean {
  return s3CodeOf(err) === 'AccessDenied' || httpStatusOf(err) === 403;
}

/** S3 answers that say the server has no such feature, or these credentials may not ask. */
function unknownBecause(err: unknown, redact: (t: string) => string): string {
  const code = s3CodeOf(err) ?? 'error';
  if (code === 'NotImplemented') return 'the server does not implement this API (NotImplemented), so it cannot tell';
  if (isDenied(err)) return 'these credentials may not ask (AccessDenied)';
  return `the server did not say: ${code}: ${redact(err instanceof Error ? err.message : String(err))}`;
}

async function checkS3(s3: S3Config, options: StorageCheckOptions): Promise<Check[]> {
  const checks: Check[] = [];
  const bare = s3.prefix.replace(/\/+$/, '');
  const prefix = bare === '' ? '' : `${bare}/`;
  const where = `s3://${s3.bucket}/${prefix}`;
  const redact = credentialRedactor([s3.accessKeyId, s3.secretAccessKey, s3.sessionToken]);
  const failure = (operation: string, err: unknown, key?: string): string =>
    convertS3Error(err, { operation, bucket: s3.bucket, location: `s3://${s3.bucket}/${key ?? prefix}`, ...(key === undefined ? {} : { key }) }, redact).message;

  // Shown after the connection, like the databases' TLS checks.
  const tls = await s3TlsChecks(s3, options.now());

  let client: S3Client;
  try {
    client = createS3Client(s3, LIMITS);
  } catch (err) {
    return [check('storage.connection', 'bucket: connection', 'fail', describeError(err), 'fix `storage.caFile`'), ...tls];
  }
  try {
    const outcomes: ProbeOutcome[] = [];
    // Listing first: it tells whether the endpoint answers at all, and what the credentials are.
    try {
      await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, MaxKeys: 1 }));
      outcomes.push({ op: 'list', result: 'allowed', detail: `listed ${where}` });
      checks.push(check('storage.connection', 'bucket: connection', 'ok', `${where}${s3.endpoint === undefined ? '' : ` at ${new URL(s3.endpoint).host}`} answered`), ...tls);
    } catch (err) {
      const code = s3CodeOf(err);
      if (code === 'AccessDenied') {
        outcomes.push({ op: 'list', result: 'denied', detail: `ListObjectsV2 on ${where}: AccessDenied` });
        checks.push(check('storage.connection', 'bucket: connection', 'ok', `${where} answered (listing refused)`), ...tls);
      } else {
        const fix =
          code === 'NoSuchBucket'
            ? 'check `storage.bucket` and `storage.region`, or create the bucket'
            : code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch'
              ? 'check `storage.accessKeyId`, `storage.secretAccessKey` and `storage.region`'
              : (tlsFailureHint(err)?.replace('`caFile`', '`storage.caFile`') ?? 'check `storage.endpoint` and that the server is reachable from this host');
        checks.push(check('storage.connection', 'bucket: connection', 'fail', failure('listing', err), fix), ...tls);
        for (const [id, title] of [
          ['storage.versioning', 'bucket: versioning'],
          ['storage.objectLock', 'bucket: Object Lock'],
          ['storage.credentials', 'bucket: credentials'],
        ] as const) {
          checks.push(check(id, title, 'skipped', 'not checked: the bucket did not answer'));
        }
        return checks;
      }
    }

    checks.push(await versioningCheck(client, s3, redact));
    const lock = await objectLockCheck(client, s3, redact);
    checks.push(lock.check);

    // Writes: a 0-byte object under doctor/, unless the bucket would keep it locked.
    const probe = `${prefix}${probeKey('probe')}`;
    let wrote = false;
    if (lock.defaultRetention !== null && !options.probeWrites) {
      outcomes.push({
        op: 'put',
        result: 'unknown',
        detail: `not probed: the bucket's default retention (${lock.defaultRetention}) would keep a probe object that long; run with --probe-writes to probe anyway`,
      });
    } else {
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: s3.bucket,
            Key: probe,
            Body: new Uint8Array(0),
            // A bucket with Object Lock takes writes only with a checksum.
            ...(lock.enabled ? { ChecksumAlgorithm: 'SHA256' as const } : {}),
          }),
        );
        wrote = true;
        outcomes.push({ op: 'put', result: 'allowed', detail: `wrote ${probe} (0 bytes)` });
      } catch (err) {
        outcomes.push(isDenied(err) ? { op: 'put', result: 'denied', detail: `PutObject ${probe}: AccessDenied` } : { op: 'put', result: 'unknown', detail: failure('writing a probe object', err, probe) });
      }
    }

    // Reads: the probe object, else an object the vault says exists.
    const readKey = wrote ? probe : options.knownKey === undefined ? undefined : `${prefix}${options.knownKey}`;
    if (readKey === undefined) {
      outcomes.push({ op: 'get', result: 'unknown', detail: 'not probed: nothing was written and the vault names no object to read' });
    } else {
      try {
        // The probe object is empty; of another object, one byte is enough.
        const got = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: readKey, ...(wrote ? {} : { Range: 'bytes=0-0' }) }));
        await got.Body?.transformToByteArray();
        outcomes.push({ op: 'get', result: 'allowed', detail: `read ${readKey}` });
      } catch (err) {
        const code = s3CodeOf(err);
        outcomes.push(
          isDenied(err)
            ? { op: 'get', result: 'denied', detail: `GetObject ${readKey}: AccessDenied` }
            : code === 'InvalidRange' // an empty object has no byte 0: the read itself was allowed
              ? { op: 'get', result: 'allowed', detail: `read ${readKey}` }
              : { op: 'get', result: 'unknown', detail: failure('reading', err, readKey) },
        );
      }
    }

    // Deletes: the probe object, else a key that does not exist (S3 answers a permitted delete of nothing with success).
    const deleteKey = wrote ? probe : `${prefix}${probeKey('absent')}`;
    try {
      await client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: deleteKey }));
      outcomes.push({ op: 'delete', result: 'allowed', detail: wrote ? `deleted ${deleteKey}` : `deleted ${deleteKey}, which does not exist` });
    } catch (err) {
      outcomes.push(
        isDenied(err)
          ? { op: 'delete', result: 'denied', detail: `DeleteObject ${deleteKey}: AccessDenied${wrote ? ` (the 0-byte probe object stays at ${deleteKey})` : ''}` }
          : { op: 'delete', result: 'unknown', detail: failure('deleting', err, deleteKey) },
      );
    }
    checks.push(...judgeCredentials({ name: 'storage', job: options.job, where, kind: 's3' }, outcomes));
    return checks;
  } finally {
    client.destroy();
  }
}

/** TLS to the endpoint and its certificate, from a handshake of our own with the same CA bundle. */
async function s3TlsChecks(s3: S3Config, now: Date): Promise<Check[]> {
  const endpoint = new URL(s3.endpoint ?? `https://${s3.forcePathStyle ? '' : `${s3.bucket}.`}s3.${s3.region}.amazonaws.com`);
  const host = endpoint.hostname.replace(/^\[(.*)\]$/, '$1');
  if (endpoint.protocol === 'http:') {
    return [
      isLoopbackHost(host)
        ? check('storage.tls', 'bucket: TLS', 'ok', 'not encrypted (http): the endpoint is on this machine')
        : check(
            'storage.tls',
            'bucket: TLS',
            'warn',
            `not encrypted (http to ${endpoint.host}, allowInsecure is set): whoever is on the path can read and alter requests`,
            'serve the endpoint over https and set `storage.endpoint` to its https URL (with `storage.caFile` for a private CA)',
          ),
      check('storage.certificate', 'bucket: TLS certificate', 'skipped', 'no TLS'),
    ];
  }
  const port = endpoint.port === '' ? 443 : Number(endpoint.port);
  try {
    const ca = s3.caFile === undefined ? undefined : readCaFile(s3.caFile, 'storage.caFile');
    const cert = await probePeerCertificate(host, port, { rejectUnauthorized: true, ...(ca === undefined ? {} : { ca }) }, 5000);
    return [
      check('storage.tls', 'bucket: TLS', 'ok', `${cert?.protocol ?? 'TLS'} to ${endpoint.host}; certificate and host name verified`),
      certificateCheck('storage.certificate', 'bucket: TLS certificate', cert, now),
    ];
  } catch (err) {
    const hint = tlsFailureHint(err);
    return [
      check(
        'storage.tls',
        'bucket: TLS',
        'fail',
        `TLS to ${endpoint.host}: ${describeError(err)}`,
        hint?.replace('`caFile`', '`storage.caFile`') ?? 'check `storage.endpoint` and that the server is reachable from this host',
      ),
      check('storage.certificate', 'bucket: TLS certificate', 'skipped', 'not checked: no TLS connection'),
    ];
  }
}

type Next = (args: unknown) => Promise<{ response: unknown }>;

/**
 * Sends `command` and returns its output with the root element of the XML the server
 * answered. A server that does not know an API may answer it with something else (s3rver
 * answers `?versioning` with a bucket listing, which the SDK reads as "never enabled"), so
 * an answer is believed only when its root is the one the API defines. The body is read
 * before the SDK's deserializer and handed on unchanged.
 */
async function sendWithRoot(client: S3Client, command: { middlewareStack: { add: (m: never, o: object) => void } }): Promise<{ output: unknown; root: string | null }> {
  let root: string | null = null;
  const capture = (next: Next) => async (args: unknown) => {
    const result = await next(args);
    const response = result.response as { body?: unknown };
    if (response.body instanceof Readable) {
      const chunks: Buffer[] = [];
      for await (const chunk of response.body) chunks.push(Buffer.from(chunk as Uint8Array));
      const body = Buffer.concat(chunks);
      root = /<([A-Za-z][\w.-]*)[\s/>]/.exec(body.toString('utf8').replace(/<\?xml[^>]*\?>/, ''))?.[1] ?? null;
      response.body = Readable.from([body]);
    }
    return result;
  };
  command.middlewareStack.add(capture as never, { step: 'deserialize', priority: 'low', name: 'letheDoctorXmlRoot' });
  const output: unknown = await client.send(command as never);
  return { output, root };
}

async function versioningCheck(client: S3Client, s3: S3Config, redact: (t: string) => string): Promise<Check> {
  const title = 'bucket: versioning';
  try {
    const { output, root } = await sendWithRoot(client, new GetBucketVersioningCommand({ Bucket: s3.bucket }));
    if (root !== 'VersioningConfiguration') {
      return check('storage.versioning', title, 'unknown', `the server answered with ${root === null ? 'no XML' : `<${root}>`}, not a versioning status, so it cannot tell`);
    }
    const { Status } = output as GetBucketVersioningCommandOutput;
    if (Status === 'Enabled') return check('storage.versioning', title, 'ok', 'enabled');
    return check(
      'storage.versioning',
      title,
      'warn',
      `${Status === 'Suspended' ? 'suspended' : 'never enabled'}: an object deleted or overwritten by mistake or by an attacker is gone`,
      'enable versioning on the bucket (Object Lock needs it) with a noncurrent-version expiry a little longer than the lock',
    );
  } catch (err) {
    return check('storage.versioning', title, 'unknown', unknownBecause(err, redact));
  }
}

async function objectLockCheck(
  client: S3Client,
  s3: S3Config,
  redact: (t: string) => string,
): Promise<{ check: Check; enabled: boolean; defaultRetention: string | null }> {
  const title = 'bucket: Object Lock';
  const configured = s3.objectLock === undefined ? null : `${s3.objectLock.mode}, ${s3.objectLock.retainDays} days`;
  try {
    const { output, root } = await sendWithRoot(client, new GetObjectLockConfigurationCommand({ Bucket: s3.bucket }));
    if (root !== 'ObjectLockConfiguration') {
      const why = `the server answered with ${root === null ? 'no XML' : `<${root}>`}, not an Object Lock configuration, so it cannot tell`;
      return { check: check('storage.objectLock', title, 'unknown', why), enabled: false, defaultRetention: null };
    }
    const lock = (output as GetObjectLockConfigurationCommandOutput).ObjectLockConfiguration;
    const rule = lock?.Rule?.DefaultRetention;
    const retention =
      rule?.Mode === undefined ? null : `${rule.Mode}, ${rule.Days !== undefined ? `${rule.Days} days` : `${rule.Years ?? '?'} years`}`;
    if (lock?.ObjectLockEnabled === 'Enabled') {
      if (retention === null && configured === null) {
        return {
          check: check(
            'storage.objectLock',
            title,
            'warn',
            'enabled, but nothing locks lethe\'s objects: the bucket has no default retention and the config no `storage.objectLock`',
            'set `storage.objectLock: { mode: COMPLIANCE, retainDays: N }`',
          ),
          enabled: true,
          defaultRetention: null,
        };
      }
      const parts = [retention === null ? null : `default retention ${retention}`, configured === null ? null : `lethe locks each object (${configured})`];
      return { check: check('storage.objectLock', title, 'ok', `enabled; ${parts.filter((p) => p !== null).join('; ')}`), enabled: true, defaultRetention: retention };
    }
  } catch (err) {
    const code = s3CodeOf(err);
    if (code !== 'ObjectLockConfigurationNotFoundError' && code !== 'NoSuchObjectLockConfiguration') {
      return { check: check('storage.objectLock', title, 'unknown', unknownBecause(err, redact)), enabled: false, defaultRetention: null };
    }
  }
  return {
    check:
      configured !== null
        ? check(
            'storage.objectLock',
            title,
            'fail',
            `the config locks each object (${configured}), but the bucket has no Object Lock: every locked write will be refused`,
            'use a bucket created with Object Lock enabled, or remove `storage.objectLock`',
          )
        : check(
            'storage.objectLock',
            title,
            'warn',
            'not enabled: whoever holds credentials that can delete can destroy every backup',
            'use a bucket with Object Lock and set `storage.objectLock` (COMPLIANCE, longer than the retention of the newest snapshot you must keep)',
          ),
    enabled: false,
    defaultRetention: null,
  };
}

/** The directory of a filesystem store: there, the "credentials" are the user lethe runs as. */
async function checkFilesystem(path: string, rt: Runtime, options: StorageCheckOptions): Promise<Check[]> {
  let store: ObjectStore;
  try {
    store = await rt.store();
  } catch (err) {
    return [
      check('storage.connection', 'store directory', 'fail', describeError(err), 'fix `storage.path`, mount the disk that belongs there, or run `lethe init`'),
      check('storage.credentials', 'store directory: permissions', 'skipped', 'not checked: the store cannot be opened'),
    ];
  }
  const checks: Check[] = [];
  try {
    const info = await lstat(path);
    const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
    checks.push(
      (info.mode & 0o027) === 0
        ? check('storage.connection', 'store directory', 'ok', `${path} (mode ${mode})`)
        : check(
            'storage.connection',
            'store directory',
            'warn',
            `${path} has mode ${mode}: ${(info.mode & 0o022) !== 0 ? 'other users can change or delete backups' : 'other users can read manifests (tenants, tables, sizes)'}`,
            `run \`chmod 700 ${path}\``,
          ),
    );
  } catch (err) {
    checks.push(check('storage.connection', 'store directory', 'fail', describeError(err), 'fix `storage.path`'));
    return checks;
  }
  const outcomes: ProbeOutcome[] = [];
  const deniedOrUnknown = (op: ProbeOutcome['op'], err: unknown): ProbeOutcome => {
    const cause = isLetheError(err) ? (err.cause as { code?: unknown } | undefined)?.code : (err as { code?: unknown }).code;
    const denied = cause === 'EACCES' || cause === 'EPERM' || cause === 'EROFS';
    return { op, result: denied ? 'denied' : 'unknown', detail: describeError(err) };
  };
  try {
    for await (const _ of store.list(PROBE_PREFIX)) break;
    outcomes.push({ op: 'list', result: 'allowed', detail: `listed ${PROBE_PREFIX}` });
  } catch (err) {
    outcomes.push(deniedOrUnknown('list', err));
  }
  const key = probeKey('probe');
  let wrote = false;
  try {
    await store.put(key, new Uint8Array(0));
    wrote = true;
    outcomes.push({ op: 'put', result: 'allowed', detail: `wrote ${key} (0 bytes)` });
  } catch (err) {
    outcomes.push(deniedOrUnknown('put', err));
  }
  const readKey = wrote ? key : options.knownKey;
  if (readKey === undefined) {
    outcomes.push({ op: 'get', result: 'unknown', detail: 'not probed: nothing was written and the vault names no object to read' });
  } else {
    try {
      await store.getRange(readKey, 0, 0);
      outcomes.push({ op: 'get', result: 'allowed', detail: `read ${readKey}` });
    } catch (err) {
      outcomes.push(deniedOrUnknown('get', err));
    }
  }
  if (wrote) {
    try {
      await store.delete(key);
      outcomes.push({ op: 'delete', result: 'allowed', detail: `deleted ${key}` });
    } catch (err) {
      outcomes.push(deniedOrUnknown('delete', err));
    }
  } else {
    // Removing a file that is not there proves nothing about the directory's permissions.
    outcomes.push({ op: 'delete', result: 'unknown', detail: 'not probed: nothing was written' });
  }
  checks.push(...judgeCredentials({ name: 'storage', job: options.job, where: path, kind: 'filesystem' }, outcomes));
  return checks;
}
