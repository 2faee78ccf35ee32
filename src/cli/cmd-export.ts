import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { exportHeld } from '../jobs/tasks.ts';
import type { Command } from './commands.ts';
import { actorName, duration, stringOpt } from './format.ts';

export const exportCommand: Command = {
  name: 'export',
  usage: 'export --case ID --out DIR [--actor NAME] [--json] [--config FILE]',
  options: { case: { type: 'string' }, out: { type: 'string' }, actor: { type: 'string' } },
  async run(ctx) {
    const caseId = stringOpt(ctx.values, 'case');
    const out = stringOpt(ctx.values, 'out');
    if (caseId === undefined || out === undefined) {
      throw new LetheError(ErrorCode.USAGE, 'export needs --case ID and --out DIR\nusage: lethe export --case ID --out DIR');
    }
    const result = await exportHeld(await ctx.runtime(), {
      caseId,
      outDir: out,
      actor: actorName(ctx.values['actor']),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress({ step: 'export', cells: p.cells, rows: p.rows }),
    });
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
    } else {
      const tables = Object.entries(result.rowsByTable).map(([t, n]) => `${t} ${n}`).join(', ');
      ctx.out(`exported case ${result.caseId} to ${result.outDir}: ${result.cells} cells from ${result.snapshots.length} snapshot(s), rows: ${tables === '' ? 'none' : tables} (${duration(result.durationMs)})`);
      for (const u of result.unreadable) ctx.out(`  unreadable: ${u.cell} (snapshot ${u.snapshot}): ${u.problem}`);
    }
    // Held data that could not be read is a failed check, not a quiet gap in an e-discovery export.
    return result.unreadable.length === 0 ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};
