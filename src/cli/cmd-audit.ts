import { ExitCode } from '../errors/index.ts';
import { checkBucket } from '../lifecycle/bucket-check.ts';
import type { Command } from './commands.ts';

/** Unrecorded objects warned of one per line before the rest is summed up. */
const UNRECORDED_LINES = 20;

export const auditVerifyCommand: Command = {
  name: 'audit verify',
  usage: 'audit verify [--vault-only] [--json] [--config FILE]',
  options: { 'vault-only': { type: 'boolean' } },
  async run(ctx) {
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    const report = await vault.verifyAuditChain();
    // The bucket's copies (audit entries, tombstones, certificates) and its unknown objects,
    // against the vault: what a vault restore and an auditor without the vault would read.
    const bucket = ctx.values['vault-only'] === true ? null : await checkBucket(vault, await rt.store());
    const ok = report.ok && (bucket?.ok ?? true);
    if (ctx.json) ctx.out(JSON.stringify({ ...report, ok, chainOk: report.ok, bucket }));
    else {
      ctx.out(`audit chain: ${report.ok ? 'OK' : 'BROKEN'} — ${report.entries} entries`);
      for (const f of report.findings) ctx.out(`  entry ${f.seq}: ${f.problem}`);
      if (bucket !== null) {
        ctx.out(
          `bucket: ${bucket.ok ? 'OK' : 'DISAGREES WITH THE VAULT'} — ${bucket.objects} objects checked, ` +
            `${bucket.unrecorded.length} the vault has no record of`,
        );
        for (const f of bucket.findings) ctx.out(`  ${f.key}: ${f.problem}`);
      }
    }
    const unrecorded = bucket?.unrecorded ?? [];
    for (const f of unrecorded.slice(0, UNRECORDED_LINES)) {
      ctx.warn(`${f.key}: ${f.problem}; lethe never trusts nor deletes it: find out who put it there`);
    }
    if (unrecorded.length > UNRECORDED_LINES) {
      ctx.warn(`… and ${unrecorded.length - UNRECORDED_LINES} more objects the vault has no record of (every one: --json)`);
    }
    return ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};
