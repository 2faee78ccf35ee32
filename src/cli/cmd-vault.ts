import { exportAudit } from '../audit/index.ts';
import { readFile } from 'node:fs/promises';
import { publicKeyFromText, signingKeyId } from '../crypto/index.ts';
import { readConfiguredSigningKey, signerFromKey } from '../keys/index.ts';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import type { ObjectLock } from '../storage/index.ts';
import { masterKeys, vaultBackup } from '../jobs/tasks.ts';
import { listVaultBackups, restoreVaultBackup } from '../vaultbackup/index.ts';
import type { Command } from './commands.ts';
import { vaultUpdate } from './job-progress.ts';
import { actorName, bytes, stringOpt } from './format.ts';

const DAY_MS = 86_400_000;

/**
 * `lethe vault backup|list|restore`: the key vault's own backups (see src/vaultbackup and
 * runbooks/vault-loss.md). Exit codes: 0 ok; 2 bad usage, or the restore target already
 * holds a vault; 3 the backup or the bucket's audit chain failed a check (nothing restored);
 * 1 anything else (e.g. a master key that does not open the backup).
 */

export const vaultBackupCommand: Command = {
  name: 'vault backup',
  usage: 'vault backup [--actor NAME] [--json] [--config FILE]',
  options: { actor: { type: 'string' } },
  async run(ctx) {
    const result = await vaultBackup(await ctx.runtime(), {
      actor: actorName(ctx.values.actor),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(vaultUpdate('vault backup', p)),
    });
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
    } else {
      const rows = Object.values(result.tables).reduce((a, b) => a + b, 0);
      ctx.out(
        `vault backup ${result.key}: ${rows} rows of ${Object.keys(result.tables).length} tables, ` +
          `${bytes(result.size)}, encrypted to the master key` +
          (result.retainUntil === null ? '' : `, locked until ${result.retainUntil.toISOString()}`),
      );
    }
    return ExitCode.OK;
  },
};

export const vaultListCommand: Command = {
  name: 'vault list',
  usage: 'vault list [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const rt = await ctx.runtime();
    const backups = await listVaultBackups(await rt.store());
    if (ctx.json) {
      ctx.out(JSON.stringify({ backups }));
      return ExitCode.OK;
    }
    if (backups.length === 0) {
      ctx.out('no vault backups yet: run `lethe vault backup` (lifecycle apply also writes one)');
      return ExitCode.OK;
    }
    for (const b of backups) ctx.out(`${b.key}  ${b.createdAt.toISOString()}  ${bytes(b.size)}`);
    return ExitCode.OK;
  },
};

export const vaultRestoreCommand: Command = {
  name: 'vault restore',
  usage:
    'vault restore --from vault/<YYYYMMDDTHHMMSSmmmZ>.age [--trust-key PUBLIC_KEY_FILE] [--allow-unsigned-audit] [--actor NAME] [--json] [--config FILE]',
  options: {
    from: { type: 'string' },
    actor: { type: 'string' },
    'trust-key': { type: 'string' },
    'allow-unsigned-audit': { type: 'boolean' },
  },
  async run(ctx) {
    const from = stringOpt(ctx.values, 'from');
    if (from === undefined || from === '') {
      throw new LetheError(
        ErrorCode.USAGE,
        'vault restore needs --from KEY (see `lethe vault list`)\nusage: lethe vault restore --from KEY',
      );
    }
    const rt = await ctx.runtime();
    const { config } = rt;
    const store = await rt.store();
    // Every epoch's key still held: the backup is encrypted to the epoch current when it was written.
    const masterIdentities = await masterKeys(rt, '`lethe vault restore`').identities();
    // The vault is what is being restored, so the key is not checked against it: the config's
    // lifecycle key is the operator's own, and the restore registers it.
    const signer = signerFromKey(await readConfiguredSigningKey(config.signingKeys.lifecycle, 'lifecycle'), 'lifecycle');
    const trustKey = stringOpt(ctx.values, 'trust-key');
    const trustedKeys = new Map<string, string>();
    if (trustKey !== undefined) {
      let text: string;
      try {
        text = await readFile(trustKey, 'utf8');
      } catch (err) {
        throw new LetheError(ErrorCode.USAGE, `--trust-key ${trustKey} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      const publicKey = publicKeyFromText(text, `--trust-key ${trustKey}`);
      trustedKeys.set(signingKeyId(publicKey), publicKey);
    }
    const result = await restoreVaultBackup({
      vaultUrl: await rt.vaultUrl(),
      schema: config.vault.schema,
      store,
      masterIdentity: masterIdentities,
      key: from,
      actor: actorName(ctx.values.actor),
      signer,
      trustedKeys,
      allowUnsignedAudit: ctx.values['allow-unsigned-audit'] === true,
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(vaultUpdate('vault restore', p)),
    });
    ctx.progress(null);
    // The re-applied destructions and the restore itself go to the bucket's audit copy now,
    // so the bucket's chain goes on from where it ended.
    const objectLock = config.storage.objectLock;
    const lock: ObjectLock | undefined =
      objectLock === undefined
        ? undefined
        : {
            mode: objectLock.mode,
            retainUntil: new Date(Date.now() + objectLock.retainDays * DAY_MS),
          };
    const exported = await exportAudit(await rt.vault(), store, signer, lock);
    if (ctx.json) {
      ctx.out(JSON.stringify({ ...result, auditExported: exported }));
      return ExitCode.OK;
    }
    const rows = Object.values(result.tables).reduce((a, b) => a + b, 0);
    ctx.out(
      `restored vault backup ${result.key} (taken ${result.backupCreatedAt}) into schema "${result.schema}": ` +
        `${rows} rows${result.resumed ? ' (loaded by an earlier run; finished now)' : ''}`,
    );
    ctx.out(
      `audit: ${result.auditReplayed} entries taken over from the bucket; chain head now ${result.auditHead.seq}`,
    );
    ctx.out(
      `destructions re-applied: ${result.destructionsReapplied.length}` +
        ` (already destroyed in the backup: ${result.tombstonesAlreadyApplied}, keys created after it: ${result.tombstonesForUnknownKeys})`,
    );
    for (const d of result.destructionsReapplied) {
      ctx.out(
        `  ${d.keyId}: first destroyed ${d.firstDestroyedAt}, destroyed again (audit entry ${d.auditSeq})`,
      );
    }
    for (const t of result.ignoredTombstones) {
      ctx.warn(`${t.key} under destructions/ was ignored: ${t.problem}. Keep it for the investigation; lethe never trusts it`);
    }
    if (result.auditUnsigned > 0) ctx.warn(`${result.auditUnsigned} unsigned audit entries were replayed (--allow-unsigned-audit)`);
    ctx.out(`the backup's signature verified (key ${result.signedBy})`);
    ctx.out('next: run `lethe init` (registers the backup signing key if the restored vault predates it), `lethe audit verify`, then `lethe verify` on the latest snapshot');
    return ExitCode.OK;
  },
};
