import { ExitCode } from '../errors/index.ts';
import { backup } from '../jobs/tasks.ts';
import type { Command } from './commands.ts';
import { actorName, bytes, duration } from './format.ts';

export const backupCommand: Command = {
  name: 'backup',
  usage: 'backup [--full-read] [--json] [--config FILE]',
  options: { 'full-read': { type: 'boolean' } },
  async run(ctx) {
    const result = await backup(await ctx.runtime(), {
      actor: actorName(undefined),
      // Read and digest every row now, whatever backup.fullEvery says.
      fullRead: ctx.values['full-read'] === true,
      signal: ctx.signal,
      onProgress: (p) => {
        ctx.progress(`backup: table ${p.table} (${p.tablesDone}/${p.tables}), ${p.cells} cells read, ${p.rows} rows, ${bytes(p.bytesPlain)}`);
      },
    });
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
    } else {
      ctx.out(
        `snapshot ${result.snapshotId}: ${result.cells} cells (${result.cellsReused} unchanged and referenced, ` +
          `${result.cellsWritten} written), ${result.rows} rows, ${bytes(result.bytesPlain)} of data, ` +
          `${bytes(result.bytesStored)} uploaded in ${result.packs} pack(s), ${duration(result.durationMs)}`,
      );
      ctx.out(
        `  ${result.segments} segments: ${result.segmentsWritten} written, ${result.segments - result.segmentsWritten} referenced; ` +
          (result.fullRead
            ? `full read: every row read (${result.cellsRead} cells)`
            : `${result.segmentsRead} changed segment(s) read, ${result.cellsRead} cells (${result.sinceFullRead} snapshot(s) since the last full read)`),
      );
      if (result.cellsSkippedShredded > 0) {
        ctx.out(`warning: ${result.cellsSkippedShredded} cells were not backed up because a key they need was destroyed`);
      }
    }
    return ExitCode.OK;
  },
};

export const snapshotsCommand: Command = {
  name: 'snapshots',
  usage: 'snapshots [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const rt = await ctx.runtime();
    const snapshots = await (await rt.vault()).listSnapshots();
    if (ctx.json) {
      ctx.out(JSON.stringify({ snapshots }));
      return ExitCode.OK;
    }
    if (snapshots.length === 0) {
      ctx.out('no snapshots yet: run `lethe backup`');
      return ExitCode.OK;
    }
    for (const s of snapshots) {
      const stats = s.stats as { cells?: number; rows?: number; bytesPlain?: number } | null;
      ctx.out(
        `${s.id}  ${s.completedAt?.toISOString() ?? '-'}  ${stats?.cells ?? '?'} cells  ${stats?.rows ?? '?'} rows  ${bytes(stats?.bytesPlain ?? 0)}`,
      );
    }
    return ExitCode.OK;
  },
};
