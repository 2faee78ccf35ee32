import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { rotateMasterKey } from '../jobs/tasks.ts';
import type { Command } from './commands.ts';
import { actorName, stringOpt } from './format.ts';

/**
 * `lethe keys rotate-master` and `lethe keys epochs` (runbooks/master-key-rotation.md).
 * Exit codes: 0 done; 2 bad usage or config; 4 another backup or lifecycle run holds the
 * job lock; 1 anything else (e.g. a master key file missing for a live epoch).
 */
export const keysRotateMasterCommand: Command = {
  name: 'keys rotate-master',
  usage: 'keys rotate-master --reason TEXT [--destroy-old-now] [--actor NAME] [--json] [--config FILE]',
  options: { reason: { type: 'string' }, 'destroy-old-now': { type: 'boolean' }, actor: { type: 'string' } },
  async run(ctx) {
    const reason = stringOpt(ctx.values, 'reason')?.trim();
    if (reason === undefined || reason === '') {
      throw new LetheError(
        ErrorCode.USAGE,
        'keys rotate-master needs --reason TEXT (it goes into the audit log)\n' +
          'usage: lethe keys rotate-master --reason TEXT [--destroy-old-now]',
      );
    }
    const destroyOldNow = ctx.values['destroy-old-now'] === true;
    const result = await rotateMasterKey(await ctx.runtime(), {
      actor: actorName(ctx.values.actor),
      reason,
      destroyOldNow,
      now: () => new Date(),
      signal: ctx.signal,
    });
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
      return ExitCode.OK;
    }
    ctx.out(
      `master key rotated to epoch ${result.epoch}: ${result.rewrapped} dimension keys re-wrapped in one vault transaction ` +
        `(retired epoch ${result.retired.join(', ') || '-'}); no bucket object was touched`,
    );
    ctx.out(`vault backup ${result.vaultBackup} written, encrypted to epoch ${result.epoch}`);
    if (result.destroyed.length > 0) ctx.out(`destroyed now: master epoch ${result.destroyed.join(', ')} (its key is gone from the provider)`);
    for (const p of result.pending) {
      ctx.out(`epoch ${p.epoch} is retired; the first \`lethe lifecycle apply\` after ${p.destroyAfter.toISOString()} destroys its key`);
    }
    return ExitCode.OK;
  },
};

export const keysEpochsCommand: Command = {
  name: 'keys epochs',
  usage: 'keys epochs [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const rt = await ctx.runtime();
    const epochs = await (await rt.vault()).listMasterEpochs();
    if (ctx.json) {
      ctx.out(JSON.stringify({ epochs }));
      return ExitCode.OK;
    }
    if (epochs.length === 0) {
      ctx.out('no master-key epochs yet: run `lethe init` with the master key configured');
      return ExitCode.OK;
    }
    for (const e of epochs) {
      const state = e.destroyedAt !== null ? `destroyed ${e.destroyedAt.toISOString()}` : e.retiredAt !== null ? `retired ${e.retiredAt.toISOString()}` : 'current';
      ctx.out(`epoch ${e.epoch} (${e.provider}, ${e.reference}): ${state}; ${e.liveKeys} live keys, ${e.destroyedKeys} destroyed keys wrapped to it`);
    }
    return ExitCode.OK;
  },
};
