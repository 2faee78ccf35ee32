import type { Config } from '../config/index.ts';
import { readMasterKeyFile } from '../crypto/index.ts';
import { FileMasterKeys } from '../keys/index.ts';
import type { MasterEpoch } from '../vault/index.ts';
import { describeError } from './database.ts';
import { check, type Check } from './types.ts';

const DAY_MS = 86_400_000;

/**
 * The master-key epochs against the file provider (keys/master.ts): the current epoch's key
 * file is there and is the key the vault wraps to; every epoch that still wraps a live key
 * has its file; a retired epoch past its grace window is waiting for a `lifecycle apply`
 * (warn); a destroyed epoch's file must not be back (fail: it would open every copy of the
 * keys erased under it). `epochs` is the vault's list, non-empty.
 */
export async function masterEpochChecks(config: Config, file: string, epochs: readonly MasterEpoch[], now: Date): Promise<Check[]> {
  const keys = new FileMasterKeys(file);
  const checks: Check[] = [];
  const current = epochs.find((e) => e.retiredAt === null);
  if (current === undefined) {
    return [check('masterKey.vault', 'master key: matches the vault', 'fail', 'the vault has epochs but none is current', 'run `lethe keys rotate-master --reason "no current epoch"`')];
  }
  const currentFile = keys.path(current.epoch);
  try {
    const { recipient } = await readMasterKeyFile(currentFile);
    checks.push(check('masterKey.file', 'master key', 'ok', `${currentFile} (epoch ${current.epoch}): owner-only, one age identity`));
    checks.push(
      recipient === current.recipient
        ? check('masterKey.vault', 'master key: matches the vault', 'ok', `the vault wraps keys to epoch ${current.epoch}, ${recipient}`)
        : check(
            'masterKey.vault',
            'master key: matches the vault',
            'fail',
            `${currentFile} is the key of ${recipient}, but the vault's epoch ${current.epoch} wraps to ${current.recipient}`,
            `restore epoch ${current.epoch}'s key file from escrow to ${currentFile}`,
          ),
    );
  } catch (err) {
    const message = describeError(err);
    checks.push(check('masterKey.file', 'master key', 'fail', `current epoch ${current.epoch}: ${message}`, `restore ${currentFile} from escrow (mode 0600)`));
  }
  const grace = config.retention.graceWindowDays;
  for (const e of epochs) {
    if (e === current) continue;
    const id = `masterKey.epoch.${e.epoch}`;
    const title = `master key: epoch ${e.epoch}`;
    const present = await keys.exists(e.epoch).catch(() => false);
    if (e.destroyedAt !== null) {
      checks.push(
        present
          ? check(id, title, 'fail', `epoch ${e.epoch} was destroyed ${e.destroyedAt.toISOString()}, yet ${keys.path(e.epoch)} exists: it opens every copy of the keys erased under it`, `remove ${keys.path(e.epoch)} (and every copy of it), then sync the directory`)
          : check(id, title, 'ok', `destroyed ${e.destroyedAt.toISOString()}; its file is gone`),
      );
      continue;
    }
    if (e.liveKeys > 0) {
      checks.push(
        present
          ? check(id, title, 'warn', `retired, yet ${e.liveKeys} live keys are still wrapped to it (a rotation did not finish)`, 'run `lethe keys rotate-master --reason "finish rotation"`')
          : check(id, title, 'fail', `${e.liveKeys} live keys are wrapped to epoch ${e.epoch}, whose key ${keys.path(e.epoch)} is missing`, `restore ${keys.path(e.epoch)} from escrow`),
      );
      continue;
    }
    const destroyAfter = new Date((e.retiredAt ?? now).getTime() + grace * DAY_MS);
    checks.push(
      destroyAfter <= now
        ? check(id, title, 'warn', `retired ${e.retiredAt?.toISOString() ?? '?'}, past its ${grace}-day grace window, and not destroyed yet`, 'run `lethe lifecycle apply`, which destroys it')
        : check(id, title, 'ok', `retired, wraps nothing live; \`lethe lifecycle apply\` destroys it after ${destroyAfter.toISOString()}`),
    );
  }
  return checks;
}
