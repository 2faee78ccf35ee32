import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { SCALES, seedChatStore, type Scale } from '../store/index.ts';
import type { Command } from './commands.ts';
import { seedUpdate } from './job-progress.ts';
import { bytes, duration, stringOpt } from './format.ts';

/** Parses a `--scale` value; throws USAGE naming the allowed ones. */
export function parseScale(value: string | undefined, allowed: readonly Scale[] = SCALES): Scale {
  const scale = (value ?? 'small') as Scale;
  if (!allowed.includes(scale)) {
    throw new LetheError(ErrorCode.USAGE, `--scale must be one of ${allowed.join(', ')}; got "${value ?? ''}"`);
  }
  return scale;
}

export const seedCommand: Command = {
  name: 'seed',
  usage: 'seed --scale small|medium|large [--seed N] [--json] [--config FILE]',
  options: { scale: { type: 'string' }, seed: { type: 'string' } },
  async run(ctx) {
    const scale = parseScale(stringOpt(ctx.values, 'scale'));
    const seedText = stringOpt(ctx.values, 'seed');
    const seed = seedText === undefined ? undefined : Number(seedText);
    if (seed !== undefined && !Number.isSafeInteger(seed)) {
      throw new LetheError(ErrorCode.USAGE, `--seed must be a whole number; got "${seedText ?? ''}"`);
    }
    const rt = await ctx.runtime();
    const stats = await seedChatStore(await rt.chatStoreUrl(), {
      scale,
      ...(seed === undefined ? {} : { seed }),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(seedUpdate(p)),
    });
    if (ctx.json) ctx.out(JSON.stringify(stats));
    else {
      const total = Object.values(stats.rows).reduce((a, b) => a + b, 0);
      ctx.out(`seeded the ${stats.scale} reference store (seed ${stats.seed}): ${total} rows, ${bytes(stats.bytes)} in ${duration(stats.durationMs)}`);
    }
    return ExitCode.OK;
  },
};
