import { ExitCode } from '../errors/index.ts';
import type { Command } from './commands.ts';

export const auditVerifyCommand: Command = {
  name: 'audit verify',
  usage: 'audit verify [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const rt = await ctx.runtime();
    const report = await (await rt.vault()).verifyAuditChain();
    if (ctx.json) ctx.out(JSON.stringify(report));
    else {
      ctx.out(`audit chain: ${report.ok ? 'OK' : 'BROKEN'} — ${report.entries} entries`);
      for (const f of report.findings) ctx.out(`  entry ${f.seq}: ${f.problem}`);
    }
    return report.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};
