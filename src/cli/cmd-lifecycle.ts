import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { calendarFieldsValid } from '../util/calendar.ts';
import { lifecycleApply, lifecyclePlan } from '../jobs/tasks.ts';
import { formatPlan } from '../lifecycle/plan-format.ts';
import type { Command } from './commands.ts';
import { printVaultDurabilityWarnings } from './durability-warnings.ts';
import { actorName, bytes, duration, stringOpt } from './format.ts';

/** `--now`: a full ISO-8601 date or instant; anything else is a usage error, not a guess. */
function parseNow(value: string | undefined): Date {
  if (value === undefined) return new Date();
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/;
  const at = new Date(value);
  if (!iso.test(value) || !calendarFieldsValid(value) || Number.isNaN(at.getTime())) {
    throw new LetheError(ErrorCode.USAGE, `--now must be an ISO-8601 date or instant such as 2027-06-01 or 2027-06-01T12:00:00Z (got "${value}")`);
  }
  return at;
}

export const lifecyclePlanCommand: Command = {
  name: 'lifecycle plan',
  usage: 'lifecycle plan [--now ISO-8601] [--json] [--config FILE]',
  options: { now: { type: 'string' } },
  async run(ctx) {
    const plan = await lifecyclePlan(await ctx.runtime(), { now: parseNow(stringOpt(ctx.values, 'now')) });
    ctx.out(ctx.json ? JSON.stringify(plan) : formatPlan(plan));
    return ExitCode.OK;
  },
};

export const lifecycleApplyCommand: Command = {
  name: 'lifecycle apply',
  usage:
    'lifecycle apply [--actor NAME] [--json] [--config FILE]\n' +
    '  --actor NAME   who the audit log names for every key destroyed and snapshot expired\n' +
    '                 (default: the login name; scheduled jobs pass theirs, e.g. lethe-lifecycle)',
  options: { actor: { type: 'string' } },
  async run(ctx) {
    const result = await lifecycleApply(await ctx.runtime(), {
      actor: actorName(ctx.values['actor']),
      now: () => new Date(),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress({ step: 'lifecycle apply', detail: p.action, items: p.done, itemsTotal: p.total, unit: 'actions' }),
    });
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
      return ExitCode.OK;
    }
    if (result.plan.actions.length === 0) ctx.out('Nothing was due.');
    ctx.out(
      [
        `lifecycle apply done in ${duration(result.durationMs)}:`,
        `  deletion requests finished  ${result.requestsFinished}`,
        `  held cells re-wrapped       ${result.cellsRewrapped}`,
        `  keys destroyed              ${result.keysDestroyed}` +
          (result.requestKeysDestroyed > 0 ? ` (and ${result.requestKeysDestroyed} by deletion requests)` : ''),
        `  snapshots expired           ${result.snapshotsExpired}`,
        `  object locks extended       ${result.locksExtended}`,
        `  objects deleted             ${result.objectsDeleted} (${bytes(result.bytesDeleted)})`,
        `  vault backup written        ${result.vaultBackup}`,
      ].join('\n'),
    );
    for (const w of result.requestsWaiting) ctx.out(`  waiting: deletion request ${w.requestId}: ${w.reason}`);
    for (const d of result.plan.deferred) ctx.out(`  deferred: ${d.objectKey ?? d.snapshotId ?? ''} ${d.reason}`);
    for (const b of result.plan.blocked) ctx.out(`  blocked: ${b.keyId} (cases ${b.cases.join(', ')}): ${b.reason}`);
    for (const u of result.plan.unknownObjects) {
      ctx.warn(`${u.objectKey}: lethe has no record of writing this object to this store, so it was left alone; look at it`);
    }
    for (const f of result.foreignTombstones) {
      ctx.warn(`${f.key} is not a tombstone lethe wrote (${f.problem}); the real tombstone went under another name`);
    }
    if (result.keysDestroyed + result.requestKeysDestroyed > 0) printVaultDurabilityWarnings(result.vaultDurability);
    return ExitCode.OK;
  },
};
