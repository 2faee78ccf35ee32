import { ExitCode } from '../errors/index.ts';
import { runDaemon, type DaemonEvent } from '../daemon/daemon.ts';
import type { Command } from './commands.ts';
import { stringOpt } from './format.ts';

function describe(e: DaemonEvent): string {
  switch (e.event) {
    case 'listening': {
      const jobs = Object.entries(e.schedules).map(([job, cron]) => `  ${job.padEnd(12)} ${cron}`);
      return [`lethe daemon ${e.owner}: serving ${e.url} (/healthz, /readyz, /metrics)`, ...(jobs.length === 0 ? ['  no schedules: nothing will run'] : jobs)].join('\n');
    }
    case 'job':
      return (
        `${e.job} (slot ${e.slot}): ${e.state}${e.code === null ? '' : ` ${e.code}`} in ${e.durationSeconds.toFixed(1)} s` +
        (e.message === null ? '' : ` — ${e.message}`)
      );
    case 'stopping':
      return e.running === null
        ? 'stopping: no job running'
        : `stopping: waiting up to ${e.deadlineSeconds} s for the running ${e.running} to finish (daemon.shutdownSeconds)`;
    case 'stopped':
      return e.aborted ? 'stopped: the running job was aborted at the deadline and recorded as such' : 'stopped';
  }
}

export const daemonCommand: Command = {
  name: 'daemon',
  usage: 'daemon [--listen ADDR:PORT] [--json] [--config FILE]',
  options: { listen: { type: 'string' } },
  async run(ctx) {
    const listen = stringOpt(ctx.values, 'listen');
    await runDaemon(await ctx.runtime(), {
      ...(listen === undefined ? {} : { listen }),
      signal: ctx.signal,
      onEvent: (e) => ctx.out(ctx.json ? JSON.stringify({ ...e, at: new Date().toISOString() }) : describe(e)),
    });
    return ExitCode.OK;
  },
};
