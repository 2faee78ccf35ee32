import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import pg from 'pg';
import type { Config, DatabaseConfig, EmbeddedConfig, SigningPurpose } from '../config/index.ts';
import { EmbeddedPostgres } from '../embedded/postgres.ts';
import { ErrorCode, LetheError, isLetheError } from '../errors/index.ts';
import { loadSigner, type Signer } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import { BUILTIN_MAPPING, checkBlobStores, parseMapping, type Mapping } from '../mapping/index.ts';
import { openStore, type ObjectStore } from '../storage/index.ts';
import { pgClientConfig, withTlsParams } from '../tls/index.ts';
import { Vault } from '../vault/index.ts';

/**
 * Reads a secret from a file that only its owner may read. Throws CONFIG_INVALID naming
 * the field and the fix; never the content.
 */
export async function readSecretFile(path: string, field: string): Promise<string> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new LetheError(ErrorCode.CONFIG_INVALID, `\`${field}\`: cannot read ${path}; create it (mode 0600) or fix the path`);
  }
  if ((info.mode & 0o077) !== 0) {
    throw new LetheError(ErrorCode.CONFIG_INVALID, `\`${field}\`: ${path} is readable by other users; run \`chmod 600 ${path}\``);
  }
  const value = (await readFile(path, 'utf8')).trim();
  if (value === '') throw new LetheError(ErrorCode.CONFIG_INVALID, `\`${field}\`: ${path} is empty`);
  return value;
}

/** pg and socket error codes meaning the server or the connection went away. */
const CONNECTION_LOST_CODES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);
const CONNECTION_LOST_TEXT = /Connection terminated|terminating connection|connection error and is not queryable|Client was closed/i;

/** True when `err` or one of its causes says the database connection was lost. */
export function isConnectionLoss(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== null && e !== undefined && depth < 8; depth++) {
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'string' && CONNECTION_LOST_CODES.has(code)) return true;
    if (typeof message === 'string' && CONNECTION_LOST_TEXT.test(message)) return true;
    e = cause;
  }
  return false;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client(pgClientConfig(url, { connectionTimeoutMillis: 2000 }));
  client.on('error', () => undefined);
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function embeddedUrl(embedded: EmbeddedConfig, password: string, database: string): string {
  return `postgres://${encodeURIComponent(embedded.user)}:${encodeURIComponent(password)}@127.0.0.1:${embedded.port}/${encodeURIComponent(database)}`;
}

/**
 * What a job needs from its environment: database URLs, the object store, the vault and
 * the mapping, opened lazily from one config. When the config names an embedded
 * PostgreSQL it is started on first need (or an already running one is used) and stopped
 * by {@link Runtime.close} if this process started it.
 */
export class Runtime {
  private server: EmbeddedPostgres | undefined;
  private embeddedPassword: string | undefined;
  private vaultHandle: Vault | undefined;
  private storeHandle: ObjectStore | undefined;
  private readonly signers = new Map<SigningPurpose, Signer>();

  constructor(
    readonly config: Config,
    readonly log: Logger,
  ) {}

  /**
   * The URL of a configured database, starting the embedded server if it is needed. A
   * `url` gets the database's TLS settings as libpq's `sslmode` and `sslrootcert`
   * parameters, which every connection turns into TLS options (src/tls/pg-options.ts).
   */
  async databaseUrl(database: DatabaseConfig): Promise<string> {
    if (database.url !== undefined) return withTlsParams(database.url, database);
    const embedded = this.config.embedded;
    if (embedded === undefined || database.embeddedDatabase === undefined) {
      throw new LetheError(ErrorCode.CONFIG_INVALID, '`embeddedDatabase` is used but the config has no `embedded` section');
    }
    const password = await this.embeddedSecret(embedded);
    const adminUrl = embeddedUrl(embedded, password, 'postgres');
    if (this.server === undefined && !(await canConnect(adminUrl))) {
      this.log.info({ dataDir: embedded.dataDir, port: embedded.port }, 'starting the embedded PostgreSQL');
      this.server = await EmbeddedPostgres.start({
        dataDir: embedded.dataDir,
        port: embedded.port,
        user: embedded.user,
        password,
        logFile: `${dirname(embedded.dataDir)}/postgres.log`,
      });
    }
    await ensureDatabase(adminUrl, database.embeddedDatabase);
    return embeddedUrl(embedded, password, database.embeddedDatabase);
  }

  async chatStoreUrl(): Promise<string> {
    return this.databaseUrl(this.config.chatStore.database);
  }

  async vaultUrl(): Promise<string> {
    return this.databaseUrl(this.config.vault.database);
  }

  /** The server URL where verify creates its scratch database, with the chat store's TLS settings. */
  async scratchServerUrl(): Promise<string> {
    const scratch = this.config.verify.scratchUrl;
    return scratch === undefined ? this.chatStoreUrl() : withTlsParams(scratch, this.config.chatStore.database);
  }

  /** The migrated vault; throws VAULT with the `lethe init` hint when it is not. */
  async vault(): Promise<Vault> {
    this.vaultHandle ??= await Vault.open(await this.vaultUrl(), this.config.vault.schema);
    return this.vaultHandle;
  }

  /**
   * The configured object store. A filesystem store must exist and carry the marker `lethe
   * init` writes (STORAGE naming the fix otherwise): a backup never creates one.
   */
  async store(): Promise<ObjectStore> {
    this.storeHandle ??= await openStore(this.config.storage);
    return this.storeHandle;
  }

  /** `lethe init`'s way in: the store, a filesystem one created and marked when it is not yet. */
  async createStore(): Promise<ObjectStore> {
    const store = await openStore(this.config.storage, { create: true });
    await this.storeHandle?.close().catch(() => undefined);
    this.storeHandle = store;
    return store;
  }

  /**
   * The job's signing key for `purpose`, read from the config and checked against the
   * vault's record of the active key (see keys/signer.ts). Throws SIGNING_KEY naming the fix.
   */
  async signer(purpose: SigningPurpose): Promise<Signer> {
    let signer = this.signers.get(purpose);
    if (signer === undefined) {
      signer = await loadSigner(this.config.signingKeys[purpose], purpose, await this.vault());
      this.signers.set(purpose, signer);
    }
    return signer;
  }

  /**
   * The master key file, for a command that unwraps keys (`what` names it, e.g. `lethe
   * verify`). A backup-only config may leave `masterKey` out; then this throws
   * CONFIG_INVALID naming the field and the fix.
   */
  masterKeyFile(what: string): string {
    const master = this.config.master;
    const file = this.config.masterKey?.file ?? (master?.provider === 'file' ? master.file : undefined);
    if (file === undefined) {
      throw new LetheError(
        ErrorCode.CONFIG_INVALID,
        `${what} needs the master key, and the config has no \`masterKey\`: add \`masterKey: { file: PATH }\` ` +
          '(the age identity file `lethe init` created, mode 0600; see config/lethe.example.yaml)',
        { details: { field: 'masterKey.file' } },
      );
    }
    return file;
  }

  /**
   * `err`, or when it is a DATABASE error caused by a lost connection (the server stopped,
   * crashed or refused), the same error with the database servers of this config named, so
   * the operator knows which server to look at. Never includes a password.
   */
  explainFailure(err: unknown): unknown {
    if (!isLetheError(err) || !isConnectionLoss(err)) return err;
    // A job lock lost with its connection is the server going away, not another run holding
    // the lock: a DATABASE failure (exit 1), not JOB_LOCKED (exit 4, "wait for the other run").
    if (err.code === ErrorCode.JOB_LOCKED) return this.explainFailure(new LetheError(ErrorCode.DATABASE, err.message, { cause: err }));
    if (err.code !== ErrorCode.DATABASE && err.code !== ErrorCode.VAULT) return err;
    const servers = new Map<string, string[]>();
    const add = (role: string, database: DatabaseConfig): void => {
      const where = this.serverOf(database);
      servers.set(where, [...(servers.get(where) ?? []), role]);
    };
    add('chat store', this.config.chatStore.database);
    add('vault', this.config.vault.database);
    const named = [...servers].map(([where, roles]) => `${where} for the ${roles.join(' and ')}`).join(', ');
    const embedded = this.config.embedded;
    const hint =
      embedded === undefined
        ? 'check that it is running and reachable, then run the command again'
        : `the embedded PostgreSQL logs to ${dirname(embedded.dataDir)}/postgres.log; the next command starts it again`;
    // The lost connection may also be a restore target's or verify's scratch server: name the
    // config's servers as the places to look, not as the certain culprit.
    return new LetheError(err.code, `${err.message} — a database connection was lost (this config's servers: ${named}); ${hint}`, {
      cause: err,
      ...(err.details === undefined ? {} : { details: err.details }),
    });
  }

  /** `host:port` of a configured database (the embedded server's for `embeddedDatabase`), no credentials. */
  private serverOf(database: DatabaseConfig): string {
    if (database.url === undefined) return `127.0.0.1:${this.config.embedded?.port ?? '?'} (embedded)`;
    try {
      const url = new URL(database.url);
      return `${url.hostname || 'localhost'}:${url.port || '5432'}`;
    } catch {
      return 'the configured URL';
    }
  }

  /** The table mapping: built in, or validated from the config. */
  mapping(): Mapping {
    const raw = this.config.chatStore.mapping;
    const mapping = raw === 'builtin' ? BUILTIN_MAPPING : parseMapping(raw, 'config field `chatStore.mapping`');
    checkBlobStores(mapping, Object.keys(this.config.chatStore.blobStores));
    return mapping;
  }

  private async embeddedSecret(embedded: EmbeddedConfig): Promise<string> {
    this.embeddedPassword ??= await readSecretFile(embedded.passwordFile, 'embedded.passwordFile');
    return this.embeddedPassword;
  }

  /** Closes what was opened; stops the embedded server if this process started it. */
  async close(): Promise<void> {
    await this.vaultHandle?.close().catch(() => undefined);
    await this.storeHandle?.close().catch(() => undefined);
    await this.server?.stop();
  }
}

async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client(pgClientConfig(adminUrl));
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
  } catch (err) {
    // A concurrent creator may have won the race; that is fine.
    if ((err as { code?: string }).code !== '42P04') throw err;
  } finally {
    await client.end();
  }
}
