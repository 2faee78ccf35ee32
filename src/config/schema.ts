import { z } from 'zod';
import { checkTimezone, Schedule } from '../daemon/schedule.ts';
import { isLoopbackHost } from '../util/net.ts';
import { DEFAULT_RETENTION, RetentionSchema } from '../lifecycle/rules.ts';
import { SSL_MODES } from '../tls/pg-url.ts';
import { databaseTlsIssues, scratchTlsIssues, storageTlsIssues } from './tls-rules.ts';
import { parseBlobStoreUrl } from './blob-store-url.ts';

/**
 * lethe's config file, validated in one place. Every object is strict: an unknown key is an
 * error, because a misspelt setting that is silently ignored is how a backup ends up
 * unencrypted or unlocked. Defaults live here and nowhere else.
 */

const nonEmpty = z.string().min(1, 'must not be empty');

/**
 * A PostgreSQL database: a URL, or a database on the embedded server (`embedded:`), with
 * TLS. `verify-full` (the server's certificate checked against `caFile`, or the public CAs,
 * and its name against the URL's host) is the production setting; `verify-ca` checks the
 * CA only; `require` encrypts without checking who answers. A server that is not on this
 * machine without TLS is refused unless `allowInsecure` says the operator accepts that.
 */
export const DatabaseSchema = z
  .strictObject({
    url: nonEmpty.optional().describe('postgres://user:password@host:port/database'),
    embeddedDatabase: nonEmpty.optional(),
    sslmode: z.enum(SSL_MODES, { error: `use one of ${SSL_MODES.join(', ')} (verify-full in production)` }).default('disable'),
    /** PEM bundle of the CA that signed the server's certificate (verify-ca, verify-full). */
    caFile: nonEmpty.optional(),
    allowInsecure: z.boolean().default(false),
  })
  .refine((d) => (d.url === undefined) !== (d.embeddedDatabase === undefined), {
    error: 'give exactly one of `url` or `embeddedDatabase`',
  })
  .superRefine((d, ctx) => {
    for (const issue of databaseTlsIssues(d)) ctx.addIssue({ code: 'custom', ...issue });
  });

export const EmbeddedSchema = z.strictObject({
  dataDir: nonEmpty,
  port: z.number().int().min(1024).max(65535).default(54329),
  user: nonEmpty.default('postgres'),
  passwordFile: nonEmpty,
});

export const ObjectLockSchema = z.strictObject({
  mode: z.enum(['GOVERNANCE', 'COMPLIANCE']),
  retainDays: z.number().int().positive().max(36_500),
});

/**
 * How the S3 client retries and when it gives up on a request. Throttling (503 SlowDown),
 * server errors (500, 502, 503, 504), connection resets and timeouts are retried with
 * exponential backoff and full jitter, at most `maxAttempts` times in all (the first attempt
 * included); 4xx answers such as 403 and 404 never are. `requestTimeoutSeconds` is how
 * long a connection may stay silent (no byte sent or received) before the attempt is
 * abandoned and retried, so a stalled server costs a bounded wait, not a hung job.
 */
export const S3RetrySchema = z
  .strictObject({
    maxAttempts: z.number().int().min(1, 'at least 1 (no retries)').max(20, 'at most 20').default(5),
    baseDelayMs: z.number().int().min(1).max(60_000).default(100),
    maxDelayMs: z.number().int().min(1).max(300_000).default(20_000),
    requestTimeoutSeconds: z.number().min(0.1).max(3600).default(120),
    connectTimeoutSeconds: z.number().min(0.1).max(600).default(10),
  })
  .refine((r) => r.maxDelayMs >= r.baseDelayMs, {
    error: 'maxDelayMs must be at least baseDelayMs',
    path: ['maxDelayMs'],
  });

export const StorageSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('filesystem'),
    path: nonEmpty,
    objectLock: ObjectLockSchema.optional(),
  }),
  z.strictObject({
    type: z.literal('s3'),
    endpoint: z.url().optional(),
    region: nonEmpty.default('us-east-1'),
    bucket: z.string().min(3, 'bucket names have at least 3 characters'),
    prefix: z.string().default(''),
    forcePathStyle: z.boolean().default(false),
    accessKeyId: nonEmpty,
    secretAccessKey: nonEmpty,
    sessionToken: nonEmpty.optional(),
    objectLock: ObjectLockSchema.optional(),
    /** PEM bundle of the CA(s) to trust for the endpoint instead of Node's built-in public CAs. */
    caFile: nonEmpty.optional(),
    /** Accept an http:// endpoint on another machine (keys and data then cross the network unencrypted). */
    allowInsecure: z.boolean().default(false),
    retry: S3RetrySchema.prefault({}),
  }).superRefine((s, ctx) => {
    for (const issue of storageTlsIssues(s)) ctx.addIssue({ code: 'custom', ...issue });
  }),
]);

/**
 * Where the chat service keeps file bytes that rows point at (a mapping's `blob.store`):
 * a directory (`file:///abs/dir`, or a path relative to the config file) or an S3 bucket and
 * prefix (`s3://bucket/prefix`, with the S3 connection settings beside it). lethe only reads
 * it: GetObject (and HeadObject) on S3, open and stat on a directory; it never lists or
 * writes it, so its credentials should allow exactly that (docs/mapping.md).
 */
export const BlobStoreSchema = z
  .strictObject({
    url: nonEmpty.describe('file:///abs/dir, a directory path, or s3://bucket/prefix'),
    endpoint: z.url().optional(),
    region: nonEmpty.default('us-east-1'),
    forcePathStyle: z.boolean().default(false),
    accessKeyId: nonEmpty.optional(),
    secretAccessKey: nonEmpty.optional(),
    sessionToken: nonEmpty.optional(),
    /** PEM bundle of the CA(s) to trust for the endpoint instead of Node's built-in public CAs. */
    caFile: nonEmpty.optional(),
    allowInsecure: z.boolean().default(false),
    retry: S3RetrySchema.prefault({}),
  })
  .superRefine((b, ctx) => {
    const where = parseBlobStoreUrl(b.url);
    if ('problem' in where) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: where.problem });
      return;
    }
    const s3Fields = ['endpoint', 'accessKeyId', 'secretAccessKey', 'sessionToken', 'caFile'] as const;
    if (where.kind === 'file') {
      for (const field of s3Fields) {
        if (b[field] !== undefined) {
          ctx.addIssue({ code: 'custom', path: [field], message: `\`${field}\` is for s3:// stores only: remove it` });
        }
      }
      return;
    }
    for (const field of ['accessKeyId', 'secretAccessKey'] as const) {
      if (b[field] === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: `an s3:// blob store needs \`${field}\`: give it as \`\${ENV_VARIABLE}\` (read-only credentials: s3:GetObject on the prefix)`,
        });
      }
    }
    for (const issue of storageTlsIssues(b)) ctx.addIssue({ code: 'custom', ...issue });
  });

/** A blob store's name as a mapping's `blob.store` gives it. */
export const BLOB_STORE_NAME = /^[a-z_][a-z0-9_-]*$/;

export const MasterKeySchema = z.strictObject({
  /** An age identity file (mode 0600) written by `lethe init`. */
  file: nonEmpty,
});

/**
 * Where the master key's epochs live (docs/operations.md, "Master keys and epochs"). `file`
 * is the same as `masterKey: { file }`. `pkcs11`: an EC P-256 key pair per epoch in a PKCS#11
 * token (private half sensitive, non-extractable, used only through CKM_ECDH1_DERIVE), the PIN
 * from a file or `${ENV}`. `aws-kms`: an ECC_NIST_P256 KEY_AGREEMENT key per epoch (its key
 * agreement is DeriveSharedSecret; destroying an epoch schedules the key's deletion).
 */
export const MasterSchema = z.discriminatedUnion('provider', [
  z.strictObject({ provider: z.literal('file'), file: nonEmpty }),
  z.strictObject({
    provider: z.literal('pkcs11'),
    /** The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
    module: nonEmpty,
    /** The token's label. */
    token: nonEmpty,
    /** The user PIN: `file: PATH` (0600) or `value: ${ENV_VARIABLE}`; never on a command line. */
    pin: z.union([z.strictObject({ file: nonEmpty }), z.strictObject({ value: nonEmpty })], {
      error: 'give `file: PATH` (a 0600 file) or `value: ${ENV_VARIABLE}`',
    }),
    /** Objects are labelled `<label>-epoch-<N>`. */
    label: z.string().regex(/^[A-Za-z0-9._-]{1,48}$/, 'letters, digits, dot, underscore and hyphen, at most 48').default('lethe-master'),
  }),
  z
    .strictObject({
      provider: z.literal('aws-kms'),
      region: nonEmpty,
      /** Only for a KMS-compatible endpoint or a VPC endpoint; https unless on this machine or `allowInsecure`. */
      endpoint: z.url().optional(),
      /** As `${ENV}`, both or neither; neither: the SDK's default chain (the host's role). */
      accessKeyId: nonEmpty.optional(),
      secretAccessKey: nonEmpty.optional(),
      sessionToken: nonEmpty.optional(),
      /** PEM bundle of the CA(s) to trust for the endpoint instead of Node's built-in public CAs. */
      caFile: nonEmpty.optional(),
      allowInsecure: z.boolean().default(false),
      /** Keys lethe creates are named `alias/<aliasPrefix>-epoch-<N>`. */
      aliasPrefix: z
        .string()
        .regex(/^[A-Za-z0-9/_-]{1,200}$/, 'letters, digits, slash, underscore and hyphen')
        .refine((p) => !p.startsWith('aws/'), 'the alias prefix aws/ is reserved for AWS managed keys: choose another')
        .default('lethe-master'),
      /**
       * Keys the operator created (ECC_NIST_P256, KEY_AGREEMENT), by epoch: `{ "1": <key ARN> }`.
       * With it lethe never calls CreateKey; a rotation needs the next epoch's key listed first.
       */
      keyIds: z
        .record(z.string(), z.string().regex(/^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)\/[A-Za-z0-9/_-]+|[0-9a-f-]{36}|mrk-[0-9a-f]{32}|alias\/[A-Za-z0-9/_-]+)$/, 'a KMS key ARN, key id or alias'))
        .refine((ids) => Object.keys(ids).length > 0, 'list at least epoch 1, or leave `keyIds` out to let lethe create the keys')
        .refine((ids) => Object.keys(ids).every((k) => /^[1-9][0-9]{0,8}$/.test(k)), 'each key is an epoch number: "1", "2", ...')
        .optional(),
    })
    .superRefine((m, ctx) => {
      if ((m.accessKeyId === undefined) !== (m.secretAccessKey === undefined)) {
        ctx.addIssue({ code: 'custom', path: [m.accessKeyId === undefined ? 'accessKeyId' : 'secretAccessKey'], message: 'give both `accessKeyId` and `secretAccessKey` (as ${ENV_VARIABLE}), or neither to use the host\'s role' });
      }
      if (m.sessionToken !== undefined && m.accessKeyId === undefined) {
        ctx.addIssue({ code: 'custom', path: ['sessionToken'], message: '`sessionToken` goes with `accessKeyId` and `secretAccessKey`' });
      }
      for (const issue of storageTlsIssues(m)) ctx.addIssue({ code: 'custom', ...issue });
    }),
]);

/**
 * Where a secret comes from: a file only its owner can read (`file`, relative to the config),
 * or the value itself (`value`), which belongs in the config only as `${ENV}`.
 */
export const SecretSourceSchema = z.union([
  z.strictObject({ file: nonEmpty }),
  z.strictObject({ value: nonEmpty }),
], { error: 'give `file: PATH` (a 0600 file) or `value: ${ENV_VARIABLE}`' });

/**
 * The Ed25519 keys jobs sign with. The vault keeps only their public halves, so whoever can
 * read the vault cannot forge what they sign. `backup` signs manifests (and derives the
 * keyed digests that find unchanged cells); `lifecycle` signs tombstones, destruction
 * certificates and vault backups. A job needs only its own: verify and restore need neither.
 */
export const SigningKeysSchema = z.strictObject({
  backup: SecretSourceSchema.optional(),
  lifecycle: SecretSourceSchema.optional(),
});

export const BackupSchema = z.strictObject({
  /** Target pack size; a pack closes at the first cell boundary past it. */
  packSizeMiB: z.number().int().min(1).max(4096).default(64),
  /** The period dimension's granularity: the finest unit retention can shred. */
  granularity: z.enum(['month', 'week', 'day']).default('month'),
  /**
   * Cells up to this size are held in memory until their digest is known, so an unchanged
   * cell is referenced rather than re-uploaded; larger cells stream straight to the pack.
   */
  cellBufferMiB: z.number().int().min(1).max(256).default(16),
  /**
   * Every Nth snapshot reads and digests every row (a full read) instead of only the
   * segments whose fingerprint changed: a bound on how long a change the fingerprints
   * missed could go unseen (docs/architecture.md). 1 reads everything every time.
   */
  fullEvery: z.number().int().min(1).max(10_000).default(7),
});

export const VerifySchema = z.strictObject({
  /**
   * A database URL on the server where verify may create and drop its scratch database.
   * Default: the chat store's server, with the chat store's credentials.
   */
  scratchUrl: nonEmpty.optional(),
  /** Cells fetched and decrypted ahead of the restore stream. */
  concurrency: z.number().int().min(1).max(64).default(4),
});

/** What the daemon alerts on; each event's details are listed in docs/operations.md. */
export const ALERT_EVENTS = [
  'job_failed',
  'rpo_breached',
  'drill_failed',
  'audit_chain_broken',
  'erase_request_pending',
] as const;

/**
 * One alert receiver. The body is signed with `secret` (HMAC-SHA256), but only TLS keeps it
 * private and keeps a network attacker from dropping it, so plain http is refused unless the
 * receiver is on this machine or `allowInsecure` says the operator accepts that.
 */
export const WebhookSchema = z
  .strictObject({
    url: z.url({ protocol: /^https?$/, error: 'give an http(s) URL, e.g. https://alerts.example.com/lethe' }),
    secret: SecretSourceSchema,
    events: z
      .array(z.enum(ALERT_EVENTS, { error: `use one of ${ALERT_EVENTS.join(', ')}` }))
      .min(1, `list at least one event: ${ALERT_EVENTS.join(', ')}`),
    /** One attempt's limit, from connecting to the end of the response. */
    timeoutSeconds: z.number().int().min(1).max(300).default(10),
    /** Attempts per alert, the first included, before it is given up and counted failed. */
    maxAttempts: z.number().int().min(1).max(20).default(6),
    allowInsecure: z.boolean().default(false),
  })
  .superRefine((hook, ctx) => {
    let url: URL;
    try {
      url = new URL(hook.url);
    } catch {
      return; // the url field's own check has reported it
    }
    if (url.protocol === 'http:' && !isLoopbackHost(url.hostname) && !hook.allowInsecure) {
      ctx.addIssue({
        code: 'custom',
        path: ['url'],
        message:
          'alerts to another host need https (an http receiver sees and can drop every alert); ' +
          'use https, or set `allowInsecure: true` on this webhook to accept that',
      });
    }
  });

export const AlertsSchema = z.strictObject({
  /** A deletion request waiting longer than this (for approval or execution) is alerted. */
  erasePendingDays: z.number().int().min(1).max(3650).default(7),
  webhooks: z.array(WebhookSchema).max(20).default([]),
});

/** `HOST:PORT` or `[IPv6]:PORT`, as `daemon.listen` and `lethe daemon --listen` take it. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new Error(`${JSON.stringify(value)} is not HOST:PORT (e.g. 127.0.0.1:9187, 0.0.0.0:9187 or [::1]:9187)`);
  }
  return { host: m[1] ?? m[2] ?? '', port };
}

const CronSchema = nonEmpty.describe('cron: [seconds] minute hour day month weekday');

/**
 * `lethe daemon`: which jobs run when, where it listens, and how replicas share the work.
 * A job left out of `schedules` does not run.
 */
export const DaemonSchema = z
  .strictObject({
    /** Where /healthz, /readyz, /metrics and the status page listen. Loopback by default. */
    listen: nonEmpty.default('127.0.0.1:9187'),
    /** The IANA time zone the cron expressions are read in. */
    timezone: nonEmpty.default('UTC'),
    /** A bearer token every endpoint but /healthz then requires. */
    token: SecretSourceSchema.optional(),
    /** Listening beyond loopback without a token is refused unless this is true. */
    allowInsecure: z.boolean().default(false),
    /** After SIGTERM, how long a running job may take to finish before it is aborted. */
    shutdownSeconds: z.number().int().min(1).max(86_400).default(300),
    /**
     * A run whose daemon stopped renewing its heartbeat this long ago is taken over by another
     * daemon (a daemon killed with SIGKILL, or cut off from the vault, stops its own run by then).
     */
    leaseSeconds: z.number().int().min(5).max(3600).default(60),
    /** Recovery objectives the status page, /metrics and alerts measure against. */
    objectives: z
      .strictObject({
        rpoMinutes: z.number().positive().max(525_600).optional(),
        rtoMinutes: z.number().positive().max(525_600).optional(),
      })
      .default({}),
    schedules: z
      .strictObject({
        backup: CronSchema.optional(),
        /** A restore drill of the newest complete snapshot. */
        verify: CronSchema.optional(),
        /** A restore drill of a randomly chosen older complete snapshot. */
        verifyOlder: CronSchema.optional(),
        lifecycle: CronSchema.optional(),
        vaultBackup: CronSchema.optional(),
      })
      .default({}),
  })
  .superRefine((d, ctx) => {
    try {
      checkTimezone(d.timezone);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['timezone'], message: (err as Error).message });
    }
    for (const [job, expression] of Object.entries(d.schedules)) {
      if (expression === undefined) continue;
      try {
        Schedule.parse(expression, 'UTC');
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['schedules', job], message: (err as Error).message });
      }
    }
    try {
      const { host } = parseListen(d.listen);
      if (!isLoopbackHost(host) && d.token === undefined && !d.allowInsecure) {
        ctx.addIssue({
          code: 'custom',
          path: ['listen'],
          message:
            `listening on ${d.listen} lets anyone who reaches it read the status page and metrics: ` +
            'set `daemon.token`, listen on 127.0.0.1, or set `daemon.allowInsecure: true` to accept that',
        });
      }
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['listen'], message: (err as Error).message });
    }
  });

export const MappingRefSchema = z.union([z.literal('builtin'), z.record(z.string(), z.unknown())]);

export const ConfigSchema = z.strictObject({
  chatStore: z.strictObject({
    database: DatabaseSchema,
    /** `builtin` for the reference schema, or an inline mapping (see docs/mapping.md). */
    mapping: MappingRefSchema.default('builtin'),
    /** Stores of file bytes the mapping's `blob` columns point into, by name (docs/mapping.md). */
    blobStores: z
      .record(
        z.string().regex(BLOB_STORE_NAME, 'a blob store name uses lower-case letters, digits, _ and - (not starting with a digit or -)'),
        BlobStoreSchema,
      )
      .default({}),
  }),
  vault: z.strictObject({
    database: DatabaseSchema,
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]*$/, 'use lower-case letters, digits and underscores')
      .default('lethe'),
  }),
  storage: StorageSchema,
  /**
   * The KEK's identity file. Optional: the backup job wraps new keys to the master
   * recipient the vault records and never reads it, so a backup-only host's config leaves it
   * out; init, verify, restore, export, lifecycle apply and vault restore refuse to run
   * without it (Runtime.masterKeyFile).
   */
  masterKey: MasterKeySchema.optional(),
  /** The master key's provider; `masterKey: { file }` is `master: { provider: file, file }`. Not both. */
  master: MasterSchema.optional(),
  signingKeys: SigningKeysSchema.default({}),
  /**
   * `postQuantum`: every new dimension key gets an ML-KEM-768 half and every new
   * encapsulation is x25519-mlkem768 (docs/format.md); `lethe init` gives existing keys theirs.
   */
  keys: z.strictObject({ postQuantum: z.boolean().default(false) }).default({ postQuantum: false }),
  embedded: EmbeddedSchema.optional(),
  backup: BackupSchema.default(BackupSchema.parse({})),
  verify: VerifySchema.default(VerifySchema.parse({})),
  /**
   * Maximum age per data class (and tenant), snapshot keep policy, vault-backup grace
   * window; parsed and checked by src/lifecycle/rules.ts. Absent: everything kept forever.
   */
  retention: RetentionSchema.default(DEFAULT_RETENTION),
  /** `lethe daemon`: schedules, HTTP endpoint, objectives. Absent: nothing is scheduled. */
  daemon: DaemonSchema.optional(),
  /** Signed webhooks the daemon calls on the events of ALERT_EVENTS. Absent: no alerts. */
  alerts: AlertsSchema.optional(),
  /**
   * Signed approvals (docs/lifecycle.md): erase request/approve and hold place/release need
   * an enrolled person's SSH signature. `allowUnsigned: true` also accepts a typed
   * `--actor NAME`, which proves nobody: for `lethe demo` and tests only, never production.
   */
  approvals: z.strictObject({ allowUnsigned: z.boolean().default(false) }).default({ allowUnsigned: false }),
  log: z
    .strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('warn') })
    .default({ level: 'warn' }),
}).superRefine((config, ctx) => {
  if (config.masterKey !== undefined && config.master !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['master'], message: '`master` and `masterKey` name the same thing: keep one (`masterKey: { file }` is `master: { provider: file, file }`)' });
  }
  // verify's scratch server uses the chat store's TLS settings, so it is checked against them here.
  const scratch = config.verify.scratchUrl;
  if (scratch === undefined) return;
  for (const issue of scratchTlsIssues(scratch, config.chatStore.database)) {
    ctx.addIssue({ code: 'custom', path: ['verify', 'scratchUrl', ...issue.path], message: issue.message });
  }
});

export type Config = z.infer<typeof ConfigSchema>;
export type DatabaseConfig = z.infer<typeof DatabaseSchema>;
export type StorageConfig = z.infer<typeof StorageSchema>;
export type EmbeddedConfig = z.infer<typeof EmbeddedSchema>;
export type SecretSource = z.infer<typeof SecretSourceSchema>;
export type MasterConfig = z.infer<typeof MasterSchema>;
export type BlobStoreConfig = z.infer<typeof BlobStoreSchema>;
export type DaemonConfig = z.infer<typeof DaemonSchema>;
export type AlertsConfig = z.infer<typeof AlertsSchema>;
export type WebhookConfig = z.infer<typeof WebhookSchema>;
export type AlertEvent = (typeof ALERT_EVENTS)[number];
export type SigningPurpose = keyof z.infer<typeof SigningKeysSchema>;
