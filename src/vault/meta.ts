import { ErrorCode, LetheError } from '../errors/index.ts';
import { query, type VaultContext } from './db.ts';

const MASTER_RECIPIENT = 'master_recipient';

/**
 * The master key's (KEK's) public recipient, which every dimension key is wrapped to.
 * Throws VAULT when `lethe init` has not recorded one yet.
 */
export async function getMasterRecipient(ctx: VaultContext): Promise<string> {
  const found = await readMasterRecipient(ctx);
  if (found === null) {
    throw new LetheError(
      ErrorCode.VAULT,
      'the vault has no master key recipient yet: run `lethe init` with the master key configured',
    );
  }
  return found;
}

/**
 * Records the master recipient once. Setting the value already recorded is a no-op (so
 * `lethe init` can be re-run); a different value throws VAULT, because every wrapped
 * dimension key would silently stop matching it. Changing the KEK is a rotation that
 * re-wraps the vault, not a settings change.
 */
export async function setMasterRecipient(ctx: VaultContext, recipient: string): Promise<void> {
  if (recipient.trim() === '' || recipient !== recipient.trim()) {
    throw new LetheError(
      ErrorCode.VAULT,
      `master key recipient ${JSON.stringify(recipient)} is empty or has surrounding whitespace`,
    );
  }
  await query(
    ctx.pool,
    'recording the master key recipient',
    `INSERT INTO ${ctx.t.meta} (key, value) VALUES ($1, to_jsonb($2::text)) ON CONFLICT (key) DO NOTHING`,
    [MASTER_RECIPIENT, recipient],
  );
  const existing = await readMasterRecipient(ctx);
  if (existing !== recipient) {
    throw new LetheError(
      ErrorCode.VAULT,
      `the vault already has master key recipient ${String(existing)}, not ${recipient}: ` +
        'check the configured master key; changing it is a master key rotation, which re-wraps ' +
        'the vault (see the KEK rotation runbook)',
      { details: { existing, requested: recipient } },
    );
  }
}

/** The vault's data format version, written by the first migration. */
export async function getFormatVersion(ctx: VaultContext): Promise<number | null> {
  const { rows } = await query<{ value: unknown }>(
    ctx.pool,
    'reading the vault format version',
    `SELECT value FROM ${ctx.t.meta} WHERE key = 'format_version'`,
  );
  const value = rows[0]?.value;
  return typeof value === 'number' ? value : null;
}

async function readMasterRecipient(ctx: VaultContext): Promise<string | null> {
  const { rows } = await query<{ value: unknown }>(
    ctx.pool,
    'reading the master key recipient',
    `SELECT value FROM ${ctx.t.meta} WHERE key = $1`,
    [MASTER_RECIPIENT],
  );
  const value = rows[0]?.value;
  return typeof value === 'string' ? value : null;
}
