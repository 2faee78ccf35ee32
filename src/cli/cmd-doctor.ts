import { configPath } from '../config/index.ts';
import { DOCTOR_JOBS, runDoctor, type Check, type CheckStatus, type DoctorJob, type DoctorReport } from '../doctor/index.ts';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import type { Command } from './commands.ts';
import { stringOpt } from './format.ts';

const LABEL: Readonly<Record<CheckStatus, string>> = {
  ok: 'ok',
  warn: 'WARN',
  fail: 'FAIL',
  unknown: 'unknown',
  skipped: 'skipped',
};

/** The report as a table: status, check, what was seen, and under each finding its fix. */
export function formatDoctorReport(report: DoctorReport, path: string): string {
  const width = Math.min(40, Math.max(...report.checks.map((c) => c.title.length)));
  const lines = [`lethe doctor: ${path} (jobs: ${report.jobs.join(', ')})`, ''];
  lines.push(`${'STATUS'.padEnd(8)} ${'CHECK'.padEnd(width)}  DETAIL`);
  const row = (c: Check): void => {
    lines.push(`${LABEL[c.status].padEnd(8)} ${c.title.padEnd(width)}  ${c.detail}`);
    if (c.fix !== undefined && (c.status === 'warn' || c.status === 'fail')) {
      lines.push(`${' '.repeat(8)} ${' '.repeat(width)}  fix: ${c.fix}`);
    }
  };
  for (const c of report.checks) row(c);
  const fails = report.checks.filter((c) => c.status === 'fail').length;
  const warns = report.checks.filter((c) => c.status === 'warn').length;
  lines.push('');
  lines.push(
    report.ok
      ? `no findings (${report.checks.length} checks)`
      : `${report.findings} finding${report.findings === 1 ? '' : 's'}: ${fails} failed, ${warns} warning${warns === 1 ? '' : 's'} (${report.checks.length} checks)`,
  );
  return lines.join('\n');
}

export const doctorCommand: Command = {
  name: 'doctor',
  usage: `doctor [--job ${DOCTOR_JOBS.join('|')}] [--probe-writes] [--json] [--config FILE]`,
  options: {
    job: { type: 'string' },
    'probe-writes': { type: 'boolean' },
  },
  async run(ctx) {
    const job = stringOpt(ctx.values, 'job') ?? 'all';
    if (!(DOCTOR_JOBS as readonly string[]).includes(job)) {
      throw new LetheError(
        ErrorCode.USAGE,
        `--job ${JSON.stringify(job)} is not a job doctor knows: use one of ${DOCTOR_JOBS.join(', ')}\nusage: lethe ${doctorCommand.usage}`,
      );
    }
    const path = configPath(stringOpt(ctx.values, 'config'));
    const rt = await ctx.runtime();
    const report = await runDoctor(rt, { job: job as DoctorJob, configPath: path, probeWrites: ctx.values['probe-writes'] === true });
    ctx.out(ctx.json ? JSON.stringify(report) : formatDoctorReport(report, path));
    return report.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};
