import { Agent as HttpsAgent } from 'node:https';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DeriveSharedSecretCommand,
  DescribeKeyCommand,
  GetPublicKeyCommand,
  KMSClient,
  ListAliasesCommand,
  ScheduleKeyDeletionCommand,
  type KMSClientConfig,
} from '@aws-sdk/client-kms';
import {
  DeferredP256Identity,
  decryptBytes,
  encodeP256Recipient,
  p256PointFromSpki,
  p256Spki,
  parseAgeHeader,
  type DeferredUnwrapper,
  type Stanza,
} from '../crypto/index.ts';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { readCaFile } from '../tls/index.ts';
import type { MasterKeyProvider } from './master.ts';

/** The `master` section for AWS KMS (config/schema.ts), with `${ENV}` already replaced. */
export interface AwsKmsMasterOptions {
  readonly region: string;
  readonly endpoint?: string | undefined;
  readonly accessKeyId?: string | undefined;
  readonly secretAccessKey?: string | undefined;
  readonly sessionToken?: string | undefined;
  readonly caFile?: string | undefined;
  /** Keys lethe creates are named `alias/<aliasPrefix>-epoch-<N>`. */
  readonly aliasPrefix: string;
  /** Keys the operator created, by epoch: lethe then never calls CreateKey. */
  readonly keyIds?: Readonly<Record<string, string>> | undefined;
}

/** A KMS key as lethe sees it. */
export interface KmsKeyState {
  readonly arn: string;
  /** The bare key id (some KMS-compatible endpoints take only that in ScheduleKeyDeletion). */
  readonly keyId: string;
  /** KMS's KeyState: Enabled, Disabled, PendingDeletion, ... */
  readonly state: string;
  readonly deletionDate: Date | null;
  readonly keySpec: string;
  readonly keyUsage: string;
}

/**
 * The KMS calls lethe makes, one method per API action (the seam the unit tests stand a
 * node:crypto key behind). Every method throws LetheError(MASTER_KEY) naming the action and
 * the key, never a secret.
 */
export interface KmsApi {
  /** CreateKey (ECC_NIST_P256, KEY_AGREEMENT) with `description` and `tags`; the new key's ARN. */
  createKey(description: string, tags: Readonly<Record<string, string>>): Promise<string>;
  createAlias(alias: string, keyId: string): Promise<void>;
  /** DescribeKey; null when KMS has no such key (or alias). */
  describeKey(keyId: string): Promise<KmsKeyState | null>;
  /** GetPublicKey: SubjectPublicKeyInfo DER. */
  getPublicKey(keyId: string): Promise<Uint8Array>;
  /** DeriveSharedSecret (ECDH) with the SPKI DER public key `publicKey`: the raw 32-byte secret. */
  deriveSharedSecret(keyId: string, publicKey: Uint8Array): Promise<Uint8Array>;
  /** ScheduleKeyDeletion; the date KMS will delete the key. */
  scheduleKeyDeletion(keyId: string, pendingWindowInDays: number): Promise<Date>;
  /** The aliases whose name starts with `prefix`, with their target key ids. */
  listAliases(prefix: string): Promise<{ alias: string; keyId: string }[]>;
}

/** KMS accepts a deletion waiting period of 7 to 30 days. */
export const KMS_MIN_PENDING_DAYS = 7;
export const KMS_MAX_PENDING_DAYS = 30;

/**
 * The PendingWindowInDays for a grace window of `graceWindowDays`: rounded up to whole days
 * and clamped to KMS's 7..30. The grace window already passed when lethe schedules the
 * deletion, so this is a second window, during which CancelKeyDeletion could undo the shred.
 */
export function kmsPendingWindowDays(graceWindowDays: number): number {
  if (!Number.isFinite(graceWindowDays)) return KMS_MIN_PENDING_DAYS;
  return Math.min(KMS_MAX_PENDING_DAYS, Math.max(KMS_MIN_PENDING_DAYS, Math.ceil(graceWindowDays)));
}

/**
 * The AWS KMS provider: one KMS key per epoch (KeySpec ECC_NIST_P256, KeyUsage
 * KEY_AGREEMENT). Its public key (GetPublicKey) is the epoch's `lethe-p256` recipient, so
 * the backup wraps locally and never calls KMS; unwrapping calls DeriveSharedSecret (ECDH)
 * with each stanza's ephemeral key, then opens the stanza exactly as the PKCS#11 provider
 * does. Epoch N's key is `keyIds[N]` when the config lists keys the operator created, else
 * `alias/<aliasPrefix>-epoch-<N>`, created here (CreateKey, then CreateAlias). Destroying
 * an epoch schedules the key's deletion: the shred is final when KMS deletes the key, at the
 * end of that waiting period.
 */
export class AwsKmsMasterKeys implements MasterKeyProvider {
  readonly kind = 'aws-kms' as const;
  /** Key ARNs seen this run, by epoch, for master_epochs.reference. */
  readonly #arns = new Map<number, string>();
  readonly #identities = new Map<number, DeferredP256Identity>();

  constructor(
    private readonly options: AwsKmsMasterOptions,
    private readonly kms: KmsApi,
    /** Names the vault in the Description and Tags of keys lethe creates. */
    private readonly vaultName: string,
    /** The grace window (retention.graceWindowDays): the deletion's waiting period, clamped. */
    private readonly graceWindowDays: number,
  ) {}

  #check(epoch: number): void {
    if (!Number.isSafeInteger(epoch) || epoch < 1) throw new LetheError(ErrorCode.INTERNAL, `invalid master epoch ${epoch}`);
  }

  /** The alias of epoch `epoch`. */
  alias(epoch: number): string {
    this.#check(epoch);
    return `alias/${this.options.aliasPrefix}-epoch-${epoch}`;
  }

  /** The key id lethe addresses epoch `epoch` by: `keyIds[N]` or the alias. */
  keyId(epoch: number): string {
    this.#check(epoch);
    if (this.options.keyIds !== undefined) {
      const id = this.options.keyIds[String(epoch)];
      if (id === undefined) {
        throw new LetheError(
          ErrorCode.MASTER_KEY,
          `master epoch ${epoch} has no key in \`master.keyIds\`: create a KMS key (KeySpec ECC_NIST_P256, KeyUsage KEY_AGREEMENT) and add it as \`keyIds: { "${epoch}": <key ARN> }\``,
          { details: { field: 'master.keyIds', epoch } },
        );
      }
      return id;
    }
    return this.alias(epoch);
  }

  reference(epoch: number): string {
    return `aws-kms:${this.#arns.get(epoch) ?? this.keyId(epoch)}`;
  }

  /** The key of epoch `epoch`, checked to be a P-256 key-agreement key; null when KMS has none. */
  async #describe(epoch: number): Promise<KmsKeyState | null> {
    const id = this.keyId(epoch);
    const key = await this.kms.describeKey(id);
    if (key === null) return null;
    if (key.keySpec !== 'ECC_NIST_P256' || key.keyUsage !== 'KEY_AGREEMENT') {
      throw new LetheError(
        ErrorCode.MASTER_KEY,
        `KMS key ${id} (epoch ${epoch}) is ${key.keySpec} for ${key.keyUsage}: a lethe master key must be KeySpec ECC_NIST_P256, KeyUsage KEY_AGREEMENT`,
      );
    }
    this.#arns.set(epoch, key.arn);
    return key;
  }

  async #recipient(epoch: number): Promise<string> {
    return encodeP256Recipient((await this.#identity(epoch)).point);
  }

  async create(epoch: number): Promise<string> {
    const existing = await this.#describe(epoch);
    if (existing !== null) {
      if (existing.state !== 'Enabled') {
        throw new LetheError(ErrorCode.MASTER_KEY, `KMS key ${this.keyId(epoch)} for master epoch ${epoch} is ${existing.state}, not Enabled: ${existing.state === 'PendingDeletion' ? 'cancel its deletion or use another key' : 'enable it'}`);
      }
      return this.#recipient(epoch);
    }
    if (this.options.keyIds !== undefined) {
      throw new LetheError(ErrorCode.MASTER_KEY, `KMS has no key ${this.keyId(epoch)} (\`master.keyIds\` "${epoch}"): check the ARN and the region ${this.options.region}`);
    }
    const arn = await this.kms.createKey(`lethe master key, vault ${this.vaultName}, epoch ${epoch}`, {
      'lethe:purpose': 'master-key',
      'lethe:vault': this.vaultName,
      'lethe:epoch': String(epoch),
    });
    // A crash here leaves a key without its alias: its Description and Tags name it, and the
    // next rotation creates another (this one wraps nothing).
    await this.kms.createAlias(this.alias(epoch), arn);
    this.#arns.set(epoch, arn);
    return this.#recipient(epoch);
  }

  async exists(epoch: number): Promise<boolean> {
    const key = await this.#describe(epoch);
    return key !== null && key.state !== 'PendingDeletion' && key.state !== 'PendingReplicaDeletion';
  }

  /** The state of epoch `epoch`'s key (doctor), null when KMS has none. */
  async state(epoch: number): Promise<KmsKeyState | null> {
    return this.#describe(epoch);
  }

  /** An identity for epoch `epoch` that asks KMS for each stanza's secret (one per epoch and run). */
  async #identity(epoch: number): Promise<DeferredP256Identity> {
    let identity = this.#identities.get(epoch);
    if (identity === undefined) {
      const id = this.keyId(epoch);
      let point: Uint8Array;
      try {
        point = p256PointFromSpki(await this.kms.getPublicKey(id));
      } catch (err) {
        throw wrapForeign(ErrorCode.MASTER_KEY, `reading the public key of KMS key ${id}`, err);
      }
      identity = new DeferredP256Identity(point, (share) => this.kms.deriveSharedSecret(id, p256Spki(share)));
      this.#identities.set(epoch, identity);
    }
    return identity;
  }

  async unwrap(epoch: number | null, wrapped: Uint8Array, what = 'a wrapped key'): Promise<Uint8Array> {
    const e = epoch ?? 1;
    if (!this.#identities.has(e) && !(await this.exists(e))) {
      throw new LetheError(ErrorCode.MASTER_KEY, `${what} cannot be opened: the master key of epoch ${e} (${this.keyId(e)}) is gone from KMS or scheduled for deletion: it was destroyed`);
    }
    // age unwraps synchronously: read the stanzas, await KMS's secrets, then decrypt.
    const identity = await (await this.#identity(e)).prepare(readStanzas(wrapped));
    return decryptBytes(wrapped, [identity]);
  }

  /**
   * Schedules the deletion of epoch `epoch`'s key (PendingWindowInDays: the grace window
   * clamped to 7..30) and returns a note with the date KMS deletes it. A key already
   * scheduled or gone is not an error.
   */
  async destroy(epoch: number): Promise<string> {
    this.#identities.delete(epoch);
    const key = await this.#describe(epoch);
    if (key === null) return `KMS key ${this.keyId(epoch)} no longer exists`;
    const deletion = key.state === 'PendingDeletion' && key.deletionDate !== null
      ? key.deletionDate
      : await this.kms.scheduleKeyDeletion(key.keyId, kmsPendingWindowDays(this.graceWindowDays));
    return `KMS key ${key.arn} scheduled for deletion on ${deletion.toISOString()}; the shred is final then (CancelKeyDeletion could undo it until that date)`;
  }

  /**
   * An identity per epoch whose key is usable: `keyIds` when given, else every alias under
   * `aliasPrefix` (the vault may be the thing being restored, so this does not read it).
   */
  async identities(): Promise<DeferredUnwrapper[]> {
    let epochs: number[];
    if (this.options.keyIds !== undefined) {
      epochs = Object.keys(this.options.keyIds).map(Number);
    } else {
      const prefix = `alias/${this.options.aliasPrefix}-epoch-`;
      epochs = (await this.kms.listAliases(prefix))
        .map((a) => a.alias.slice(prefix.length))
        .filter((n) => /^[1-9]\d{0,8}$/.test(n))
        .map(Number);
    }
    const out: DeferredUnwrapper[] = [];
    for (const epoch of epochs.sort((a, b) => b - a)) {
      if (await this.exists(epoch)) out.push(await this.#identity(epoch));
    }
    return out;
  }
}

function readStanzas(wrapped: Uint8Array): Stanza[] {
  try {
    return parseAgeHeader(wrapped).header.stanzas;
  } catch (err) {
    throw wrapForeign(ErrorCode.CRYPTO, 'reading the age header of a wrapped key', err);
  }
}

/**
 * The {@link KmsApi} of the AWS SDK for `options`: static credentials when the config gives
 * them, else the SDK's default chain (instance role, web identity); `caFile` trusted instead
 * of the public CAs. Makes no request.
 */
export function sdkKmsApi(options: AwsKmsMasterOptions): KmsApi {
  const config: KMSClientConfig = {
    region: options.region,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.accessKeyId === undefined || options.secretAccessKey === undefined
      ? {}
      : {
          credentials: {
            accessKeyId: options.accessKeyId,
            secretAccessKey: options.secretAccessKey,
            ...(options.sessionToken === undefined ? {} : { sessionToken: options.sessionToken }),
          },
        }),
    ...(options.caFile === undefined
      ? {}
      : { requestHandler: { httpsAgent: new HttpsAgent({ keepAlive: true, ca: readCaFile(options.caFile, 'master.caFile') }) } }),
    maxAttempts: 5,
  };
  let client: KMSClient | undefined;
  const kms = (): KMSClient => (client ??= new KMSClient(config));
  const fail = (doing: string, err: unknown): LetheError => {
    const name = (err as { name?: unknown }).name;
    const hint =
      name === 'AccessDeniedException'
        ? ': this role lacks the permission (docs/operations.md, "AWS KMS master": the IAM policy per role)'
        : name === 'CredentialsProviderError'
          ? ': no AWS credentials (set `master.accessKeyId`/`secretAccessKey` as ${ENV}, or give the host a role)'
          : '';
    return new LetheError(ErrorCode.MASTER_KEY, `AWS KMS ${doing} failed (${typeof name === 'string' ? name : 'error'})${hint}`, { cause: err });
  };
  return {
    async createKey(description, tags) {
      try {
        const out = await kms().send(
          new CreateKeyCommand({
            KeySpec: 'ECC_NIST_P256',
            KeyUsage: 'KEY_AGREEMENT',
            Description: description,
            Tags: Object.entries(tags).map(([TagKey, TagValue]) => ({ TagKey, TagValue })),
          }),
        );
        const arn = out.KeyMetadata?.Arn;
        if (arn === undefined) throw new Error('CreateKey returned no key ARN');
        return arn;
      } catch (err) {
        throw fail('CreateKey', err);
      }
    },
    async createAlias(alias, keyId) {
      try {
        await kms().send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyId }));
      } catch (err) {
        throw fail(`CreateAlias ${alias}`, err);
      }
    },
    async describeKey(keyId) {
      try {
        const meta = (await kms().send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata;
        if (meta?.Arn === undefined) return null;
        return {
          arn: meta.Arn,
          keyId: meta.KeyId ?? meta.Arn,
          state: meta.KeyState ?? 'Unknown',
          deletionDate: meta.DeletionDate ?? null,
          keySpec: meta.KeySpec ?? 'Unknown',
          keyUsage: meta.KeyUsage ?? 'Unknown',
        };
      } catch (err) {
        if ((err as { name?: unknown }).name === 'NotFoundException') return null;
        throw fail(`DescribeKey ${keyId}`, err);
      }
    },
    async getPublicKey(keyId) {
      try {
        const key = (await kms().send(new GetPublicKeyCommand({ KeyId: keyId }))).PublicKey;
        if (key === undefined) throw new Error('GetPublicKey returned no key');
        return key;
      } catch (err) {
        throw fail(`GetPublicKey ${keyId}`, err);
      }
    },
    async deriveSharedSecret(keyId, publicKey) {
      try {
        const secret = (await kms().send(new DeriveSharedSecretCommand({ KeyId: keyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: publicKey }))).SharedSecret;
        if (secret === undefined) throw new Error('DeriveSharedSecret returned no secret');
        return secret;
      } catch (err) {
        throw fail(`DeriveSharedSecret ${keyId}`, err);
      }
    },
    async scheduleKeyDeletion(keyId, days) {
      try {
        const out = await kms().send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: days }));
        return out.DeletionDate ?? new Date(Date.now() + days * 86_400_000);
      } catch (err) {
        throw fail(`ScheduleKeyDeletion ${keyId}`, err);
      }
    },
    async listAliases(prefix) {
      const out: { alias: string; keyId: string }[] = [];
      try {
        let marker: string | undefined;
        do {
          const page = await kms().send(new ListAliasesCommand({ Limit: 100, ...(marker === undefined ? {} : { Marker: marker }) }));
          for (const a of page.Aliases ?? []) {
            if (a.AliasName?.startsWith(prefix) === true && a.TargetKeyId !== undefined) out.push({ alias: a.AliasName, keyId: a.TargetKeyId });
          }
          marker = page.Truncated === true ? page.NextMarker : undefined;
        } while (marker !== undefined);
      } catch (err) {
        throw fail('ListAliases', err);
      }
      return out;
    },
  };
}
