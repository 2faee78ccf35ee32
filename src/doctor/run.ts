import type { Config } from '../config/index.ts';
import type { Runtime } from '../jobs/runtime.ts';
import { manifestKey } from '../manifest/index.ts';
import { Vault } from '../vault/index.ts';
import { checkDatabase, describeError, vaultSchemaCheck, type DatabaseTarget } from './database.ts';
import { checkKeyFiles } from './key-files.ts';
import { checkStorage } from './storage.ts';
import { check, isFinding, type Check, type DoctorJob, type DoctorReport } from './types.ts';

export interface DoctorOptions {
  /** The jobs this config serves (see DoctorJob); decides which databases, keys and permissions matter. */
  readonly job: DoctorJob;
  /** The config file checked, for the report. */
  readonly configPath: string;
  /** Probe writes even where the bucket's default retention would keep the probe object. */
  readonly probeWrites?: boolean;
  readonly now?: () => Date;
}

/** Which databases a job connects to. */
function databasesOf(job: DoctorJob, config: Config): { chatStore: boolean; scratch: boolean } {
  switch (job) {
    case 'all':
      return { chatStore: true, scratch: config.verify.scratchUrl !== undefined };
    case 'backup':
      return { chatStore: true, scratch: false };
    case 'verify':
      // Verify's scratch server is the chat store's unless `verify.scratchUrl` names another.
      return { chatStore: config.verify.scratchUrl === undefined, scratch: config.verify.scratchUrl !== undefined };
    case 'lifecycle':
    case 'vault-backup':
      return { chatStore: false, scratch: false };
  }
}

/**
 * Runs every check `lethe doctor` knows for the config `rt` holds and returns them all,
 * findings and passes alike, in a fixed order: config, chat store (or the scratch server),
 * vault, bucket, key files. Makes no change but a 0-byte probe object under `doctor/`,
 * deleted again where the credentials may delete, and (on an embedded config) starting the
 * embedded PostgreSQL. Never throws for what it checks: each problem is a check.
 */
export async function runDoctor(rt: Runtime, options: DoctorOptions): Promise<DoctorReport> {
  const now = options.now ?? (() => new Date());
  const { config } = rt;
  const checks: Check[] = [check('config', 'config', 'ok', `${options.configPath} is valid`)];

  const uses = databasesOf(options.job, config);
  if (uses.chatStore) {
    checks.push(...(await databaseChecks(() => rt.chatStoreUrl(), { id: 'chatStore', label: 'chat store', settings: config.chatStore.database, urlField: 'chatStore.database.url', tlsField: 'chatStore.database' }, now)));
  }
  if (uses.scratch) {
    checks.push(
      ...(await databaseChecks(
        () => rt.scratchServerUrl(),
        { id: 'scratch', label: 'scratch server', settings: config.chatStore.database, urlField: 'verify.scratchUrl', tlsField: 'chatStore.database' },
        now,
      )),
    );
  }

  let vault: Vault | null = null;
  // Set by the vault's schema check, which runs inside checkDatabase.
  const schema = { ok: false };
  const vaultChecks = await databaseChecks(
    () => rt.vaultUrl(),
    { id: 'vault', label: 'vault', settings: config.vault.database, urlField: 'vault.database.url', tlsField: 'vault.database' },
    now,
    async (client) => {
      const checked = await vaultSchemaCheck(client, config.vault.schema);
      schema.ok = checked.status === 'ok';
      return [checked];
    },
    [['vault.schema', 'schema version']],
  );
  checks.push(...vaultChecks);
  try {
    if (schema.ok) vault = new Vault(await rt.vaultUrl(), config.vault.schema);
    let knownKey: string | undefined;
    if (vault !== null) {
      try {
        const latest = await vault.latestCompleteSnapshot((await rt.store()).description);
        if (latest !== null) knownKey = manifestKey(latest.id);
      } catch {
        // Only a read probe's fallback: without it, that probe reports unknown.
      }
    }
    checks.push(...(await checkStorage(config, rt, { job: options.job, probeWrites: options.probeWrites === true, now, knownKey })));
    checks.push(...(await checkKeyFiles(config, options.job, vault)));
  } finally {
    await vault?.close().catch(() => undefined);
  }
  const findings = checks.filter((c) => isFinding(c.status)).length;
  return { ok: findings === 0, findings, jobs: [options.job], checks };
}

async function databaseChecks(
  url: () => Promise<string>,
  target: Omit<DatabaseTarget, 'url'>,
  now: () => Date,
  more?: Parameters<typeof checkDatabase>[2],
  moreIds: readonly [string, string][] = [],
): Promise<Check[]> {
  let resolved: string;
  try {
    resolved = await url();
  } catch (err) {
    // An embedded server that will not start, an unreadable password file...
    return [
      check(`${target.id}.connection`, `${target.label}: connection`, 'fail', describeError(err), 'fix what the message names, then run lethe doctor again'),
      ...[['tls', 'TLS'], ['certificate', 'TLS certificate'], ['clock', 'clock']].map(([id, what]) =>
        check(`${target.id}.${id ?? ''}`, `${target.label}: ${what ?? ''}`, 'skipped', 'not checked: no connection'),
      ),
      ...moreIds.map(([id, what]) => check(id, `${target.label}: ${what}`, 'skipped', 'not checked: no connection')),
    ];
  }
  return checkDatabase({ ...target, url: resolved }, now, more, moreIds);
}
