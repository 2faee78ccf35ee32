import { createHash, randomBytes } from 'node:crypto';
import { access, constants, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import {
  buildEvidenceReport,
  parseReportPeriod,
  renderReportHtml,
  reportObjectives,
  reportText,
  verifyReport,
} from '../report/index.ts';
import type { Command } from './commands.ts';
import { actorName, stringOpt } from './format.ts';

const USAGE =
  'report --from DATE --to DATE [--out FILE.html] [--actor NAME] [--json] [--config FILE]';

function usage(message: string): LetheError {
  return new LetheError(ErrorCode.USAGE, `${message}\nusage: lethe ${USAGE}`);
}

/** `--out` and the signed JSON written beside it (`report.html` → `report.json`). */
function outputPaths(out: string | undefined): { html: string; json: string } | undefined {
  if (out === undefined) return undefined;
  const match = /^(.*[^/])\.html?$/i.exec(out);
  if (match === null || basename(out).startsWith('.')) {
    throw usage(
      `--out ${JSON.stringify(out)} must name an .html file (e.g. --out evidence-2026-03.html); the signed JSON is written beside it as .json`,
    );
  }
  return { html: out, json: `${match[1] ?? out}.json` };
}

/** Refuses early, before the vault is read, an --out whose directory cannot be written. */
async function writableDirectory(path: string): Promise<void> {
  try {
    await access(dirname(path), constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw usage(
      `cannot write to the directory of --out ${path} (${code}): choose a directory that exists and that you can write to`,
    );
  }
}

/**
 * Writes `text` to `path` through a temporary file in the same directory and a rename, so a
 * reader never sees half a report. Throws USAGE naming the path and the fix.
 */
async function writeWhole(path: string, text: string): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(temp, text, { flag: 'wx', mode: 0o644 });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new LetheError(
      ErrorCode.USAGE,
      `cannot write ${path} (${code}): choose a directory that exists and that you can write to`,
      {
        cause: err,
        details: { path },
      },
    );
  }
}

/**
 * `lethe report --from DATE --to DATE`: evidence for auditors, read from the vault and
 * signed with the lifecycle key (src/report, docs/evidence.md). Prints text, or the signed
 * JSON with --json; `--out FILE.html` also writes a self-contained page and the signed JSON
 * beside it. Read only. Exit 0 when the evidence is sound, 3 when the audit chain is broken
 * or a certificate's signature fails (the report is still printed and written), 2 for bad
 * dates, options or a missing lifecycle signing key.
 */
export const reportCommand: Command = {
  name: 'report',
  usage: USAGE,
  options: {
    from: { type: 'string' },
    to: { type: 'string' },
    out: { type: 'string' },
    actor: { type: 'string' },
  },
  async run(ctx) {
    const period = parseReportPeriod(
      stringOpt(ctx.values, 'from'),
      stringOpt(ctx.values, 'to'),
      new Date(),
    );
    const paths = outputPaths(stringOpt(ctx.values, 'out'));
    if (paths !== undefined) await writableDirectory(paths.html);
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    const signer = await rt.signer('lifecycle');
    ctx.progress('reading the vault and checking the audit chain…');
    const report = await buildEvidenceReport({
      vault,
      signer,
      period,
      objectives: reportObjectives(rt.config),
      actor: actorName(ctx.values['actor']),
      signal: ctx.signal,
    });
    // The same check an auditor makes, against the keys the vault lists: a report that does
    // not verify here is a bug, and must never leave this process looking signed.
    const check = verifyReport(report, await vault.getSigningPublicKeys(['lifecycle']));
    if (!check.ok)
      throw new LetheError(
        ErrorCode.INTERNAL,
        `the report just signed does not verify: ${check.problem}`,
      );
    const signature = 'valid (checked against the vault)';
    if (paths !== undefined) {
      const json = `${JSON.stringify(report, null, 2)}\n`;
      const jsonSha256 = createHash('sha256').update(json, 'utf8').digest('hex');
      await writeWhole(paths.json, json);
      await writeWhole(
        paths.html,
        renderReportHtml(report, { jsonFile: basename(paths.json), jsonSha256, signature }),
      );
      if (!ctx.json) {
        for (const line of reportText(report, signature)) ctx.out(line);
        ctx.out('');
        ctx.out(
          `wrote ${paths.html} and the signed JSON ${paths.json} (sha256 ${jsonSha256}); docs/evidence.md says how to check it`,
        );
      }
    } else if (!ctx.json) {
      for (const line of reportText(report, signature)) ctx.out(line);
    }
    if (ctx.json) ctx.out(JSON.stringify(report));
    return report.integrity.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};
