import { ExitCode } from '../errors/index.ts';
import { initialize } from '../jobs/tasks.ts';
import type { Command } from './commands.ts';
import { actorName } from './format.ts';

export const initCommand: Command = {
  name: 'init',
  usage: 'init [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const result = await initialize(await ctx.runtime(), actorName(undefined));
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
      return ExitCode.OK;
    }
    const applied = result.migrationsApplied;
    ctx.out(`vault ready (schema ${result.vaultSchema}${applied.length > 0 ? `, migrations ${applied.join(', ')} applied` : ', up to date'})`);
    ctx.out(`master key ${result.masterKeyCreated ? 'created at' : 'found at'} ${result.masterKeyFile} (recipient ${result.masterRecipient})`);
    if (result.masterKeyCreated) {
      ctx.out('  keep an offline escrow copy of this file: without it no snapshot can be read (runbooks/disaster-recovery.md)');
    }
    ctx.out(`storage: ${result.storage}`);
    return ExitCode.OK;
  },
};
