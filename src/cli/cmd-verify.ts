import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { restore, verify } from '../jobs/tasks.ts';
import type { Command } from './commands.ts';
import { loadUpdate } from './job-progress.ts';
import { actorName, duration, stringOpt } from './format.ts';
import { schemaReportLines } from './schema-lines.ts';

/** Destroyed keys listed one per line before the rest is summed up (all are in --json). */
const SHREDDED_LINES = 20;

export const verifyCommand: Command = {
  name: 'verify',
  usage: 'verify [--snapshot ID|latest] [--json] [--config FILE]',
  options: { snapshot: { type: 'string' } },
  async run(ctx) {
    const result = await verify(await ctx.runtime(), {
      snapshot: stringOpt(ctx.values, 'snapshot') ?? 'latest',
      actor: actorName(undefined),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(loadUpdate('verify', p)),
    });
    for (const warning of result.warnings) ctx.warn(warning);
    if (ctx.json) {
      ctx.out(JSON.stringify(result));
    } else {
      ctx.out(
        `snapshot ${result.snapshotId}: ${result.ok ? 'OK' : 'FAILED'} — ${result.cellsVerified}/${result.cells} cells verified, ` +
          `${result.cellsShredded} shredded, ${result.cellsFailed} failed, ${result.rows} rows restored in ${duration(result.durationMs)}`,
      );
      if (result.schema !== null) for (const line of schemaReportLines(result.schema)) ctx.out(`  ${line}`);
      for (const [table, files] of Object.entries(result.blobsByTable)) ctx.out(`  ${files} file(s) of table ${table} checked (sha256, tag, length)`);
      for (const f of result.findings) ctx.out(`  ${f.code}  ${f.subject}: ${f.problem}`);
      for (const s of result.shredded.slice(0, SHREDDED_LINES)) {
        ctx.out(`  shredded  ${s.cells} cell(s) by ${s.keyId}: destroyed ${s.record.destroyedAt.toISOString()} by ${s.record.actor} (${s.record.reason}; audit #${s.record.auditSeq})`);
      }
      if (result.shredded.length > SHREDDED_LINES) {
        ctx.out(`  … and ${result.shredded.length - SHREDDED_LINES} more destroyed keys (every one with its record: --json)`);
      }
      if (result.constraintsNotValidated.length > 0) {
        ctx.out(`  ${result.constraintsNotValidated.length} foreign key(s) hold only NOT VALID: rows refer to shredded rows`);
      }
    }
    return result.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};

export const restoreCommand: Command = {
  name: 'restore',
  usage: 'restore --snapshot ID|latest --target URL [--blob-target URL] [--schema NAME] [--tenant ID] [--replace] [--json] [--config FILE]',
  options: {
    snapshot: { type: 'string' },
    target: { type: 'string' },
    'blob-target': { type: 'string' },
    tenant: { type: 'string' },
    replace: { type: 'boolean' },
    schema: { type: 'string' },
  },
  async run(ctx) {
    const snapshot = stringOpt(ctx.values, 'snapshot');
    const target = stringOpt(ctx.values, 'target');
    if (snapshot === undefined || target === undefined) {
      throw new LetheError(ErrorCode.USAGE, 'restore needs --snapshot ID (or latest) and --target URL\nusage: lethe restore --snapshot ID --target URL [--tenant ID]');
    }
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      throw new LetheError(ErrorCode.USAGE, '--target must be a postgres:// URL (put the password in PGPASSWORD, not in the URL)');
    }
    if (url.password !== '') {
      ctx.warn('--target holds a password, which other users can see in the process list; use PGPASSWORD or ~/.pgpass instead');
    }
    const tenant = stringOpt(ctx.values, 'tenant');
    const schema = stringOpt(ctx.values, 'schema');
    const blobTarget = stringOpt(ctx.values, 'blob-target');
    const result = await restore(await ctx.runtime(), {
      ...(blobTarget === undefined ? {} : { blobTarget }),
      snapshot,
      targetUrl: target,
      ...(schema === undefined ? {} : { targetSchema: schema }),
      ...(tenant === undefined ? {} : { tenant }),
      replace: ctx.values['replace'] === true,
      actor: actorName(undefined),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(loadUpdate('restore', p)),
    });
    for (const warning of result.warnings) ctx.warn(warning);
    if (ctx.json) ctx.out(JSON.stringify(result));
    else {
      ctx.out(
        `restored snapshot ${result.snapshotId}${result.tenant === null ? '' : ` (tenant ${result.tenant})`}: ` +
          `${result.tables} tables, ${result.cells} cells, ${result.rows} rows in ${duration(result.durationMs)}` +
          (result.cellsShredded > 0 ? `; ${result.cellsShredded} shredded cells left out` : ''),
      );
      if (result.blobTarget !== null) ctx.out(`  ${result.blobs} file(s) written to ${result.blobTarget}, each at its original location`);
    }
    return ExitCode.OK;
  },
};
