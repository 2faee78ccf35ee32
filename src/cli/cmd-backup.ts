import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { backup, backupCoordinate, backupShard } from '../jobs/tasks.ts';
import type { BackupProgress } from '../snapshot/index.ts';
import type { Command } from './commands.ts';
import { backupUpdate } from './job-progress.ts';
import { actorName, bytes, duration, stringOpt } from './format.ts';
import { schemaText } from './schema-lines.ts';

/** `I/K` with 0 <= I < K <= 1024, or a USAGE error naming the option. */
function parseShard(text: string): { index: number; of: number } {
  const match = /^(\d{1,4})\/(\d{1,4})$/.exec(text);
  const index = Number(match?.[1]);
  const of = Number(match?.[2]);
  if (match === null || of < 1 || of > 1024 || index >= of) {
    throw new LetheError(ErrorCode.USAGE, `--shard takes I/K, this worker's shard I of K (0 <= I < K <= 1024), e.g. --shard 0/3; got ${JSON.stringify(text)}`);
  }
  return { index, of };
}

function parseCount(name: string, text: string | undefined, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new LetheError(ErrorCode.USAGE, `--${name} takes a whole number from 1 to ${max}; got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

export const backupCommand: Command = {
  name: 'backup',
  usage: 'backup [--full-read] [--coordinate K | --shard I/K] [--wait SECONDS] [--json] [--config FILE]',
  options: { 'full-read': { type: 'boolean' }, coordinate: { type: 'string' }, shard: { type: 'string' }, wait: { type: 'string' } },
  async run(ctx) {
    const coordinate = parseCount('coordinate', stringOpt(ctx.values, 'coordinate'), 1024);
    const shardText = stringOpt(ctx.values, 'shard');
    const waitSeconds = parseCount('wait', stringOpt(ctx.values, 'wait'), 86_400);
    const waitMs = waitSeconds === undefined ? {} : { waitMs: waitSeconds * 1000 };
    if (coordinate !== undefined && shardText !== undefined) {
      throw new LetheError(ErrorCode.USAGE, 'a process either coordinates (--coordinate K) or writes a shard (--shard I/K), not both');
    }
    const onProgress = (p: BackupProgress): void => ctx.progress(backupUpdate(p));
    if (shardText !== undefined) {
      if (ctx.values['full-read'] === true) throw new LetheError(ErrorCode.USAGE, '--full-read is the coordinator\'s to decide: give it to `lethe backup --coordinate K`');
      const shard = parseShard(shardText);
      const result = await backupShard(await ctx.runtime(), { actor: actorName(undefined), ...shard, ...waitMs, signal: ctx.signal, onProgress });
      ctx.out(
        ctx.json
          ? JSON.stringify(result)
          : `shard ${result.shard}/${result.shards} of snapshot ${result.snapshotId}: ${result.cellsRead} cells read, ${result.cellsWritten} written, ` +
              `${result.segmentsWritten} segment(s) written, ${bytes(result.bytesStored)} uploaded, ${duration(result.durationMs)}`,
      );
      return ExitCode.OK;
    }
    const common = { actor: actorName(undefined), signal: ctx.signal, onProgress, fullRead: ctx.values['full-read'] === true };
    const result =
      coordinate === undefined
        ? await backup(await ctx.runtime(), common)
        : await backupCoordinate(await ctx.runtime(), { ...common, shards: coordinate, ...waitMs });
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
      ctx.out(
        `  ${schemaText(result.schema)}` +
          (result.schemaChanged === true ? ', changed since the previous snapshot (`lethe verify` lists what changed)' : ''),
      );
      if (result.cellsSkippedShredded > 0) {
        ctx.out(`warning: ${result.cellsSkippedShredded} cells were not backed up because a key they need was destroyed`);
      }
      const b = result.blobs;
      if (b.written + b.reused + b.shredded + b.findings > 0) {
        ctx.out(`  files: ${b.written} written, ${b.reused} unchanged and referenced, ${b.shredded} left out as shredded, ${bytes(b.bytesPlain)}`);
      }
      if (b.findings > 0) {
        ctx.out(`completed with findings: ${b.findings} file(s) could not be backed up (their rows are in the snapshot):`);
        for (const f of result.findings) {
          const key = Object.entries(f.primaryKey).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ');
          ctx.out(`  ${f.kind}: table ${f.table} (${key}), ${f.location === '' ? 'location not kept (found by a shard)' : `location ${JSON.stringify(f.location)}`} in store ${f.store}: ${f.problem}`);
        }
        if (result.findings.length < b.findings) ctx.out(`  … and ${b.findings - result.findings.length} more (see the backup's audit entry)`);
      }
    }
    // A snapshot with findings is complete, but something it should hold is not in it.
    return result.blobs.findings > 0 ? ExitCode.CHECK_FAILED : ExitCode.OK;
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
    // Newest first: a snapshot's schema is compared with the next line's (the one before it).
    const schemaOf = (stats: unknown): string | null => {
      const schema = typeof stats === 'object' && stats !== null ? (stats as { schema?: unknown }).schema : undefined;
      const id = typeof schema === 'object' && schema !== null ? (schema as { id?: unknown }).id : undefined;
      return typeof id === 'string' && /^[0-9a-f]{12}$/.test(id) ? id : null;
    };
    snapshots.forEach((s, i) => {
      const stats = s.stats as { cells?: number; rows?: number; bytesPlain?: number } | null;
      const schema = schemaOf(s.stats);
      const before = snapshots[i + 1] === undefined ? null : schemaOf(snapshots[i + 1]?.stats);
      ctx.out(
        `${s.id}  ${s.completedAt?.toISOString() ?? '-'}  ${stats?.cells ?? '?'} cells  ${stats?.rows ?? '?'} rows  ${bytes(stats?.bytesPlain ?? 0)}` +
          `  schema ${schema ?? '-'}${schema !== null && before !== null && schema !== before ? ' (changed)' : ''}`,
      );
    });
    return ExitCode.OK;
  },
};
