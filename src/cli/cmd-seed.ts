import { resolve } from 'node:path';
import { parseBlobStoreUrl, type Config } from '../config/index.ts';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { BUILTIN_BLOB_STORE } from '../mapping/index.ts';
import { SCALES, seedChatStore, type Scale } from '../store/index.ts';
import type { Command } from './commands.ts';
import { seedUpdate } from './job-progress.ts';
import { bytes, duration, stringOpt } from './format.ts';

/** Parses a `--scale` value; throws USAGE naming the allowed ones. */
export function parseScale(value: string | undefined, allowed: readonly Scale[] = SCALES): Scale {
  const scale = (value ?? 'small') as Scale;
  if (!allowed.includes(scale)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--scale must be one of ${allowed.join(', ')}; got "${value ?? ''}"`,
    );
  }
  return scale;
}

/**
 * The directory the reference store's file bytes go to: `flag` (`--files DIR`, resolved
 * against the working directory) if given, else the directory of the config's
 * `chatStore.blobStores.files`, which the built-in mapping reads them back from. Throws
 * USAGE naming both when there is neither, or when that store is not a directory.
 */
export function seedFilesDir(config: Config, flag: string | undefined): string {
  if (flag !== undefined) {
    if (flag === '') throw new LetheError(ErrorCode.USAGE, '--files needs a directory');
    return resolve(flag);
  }
  const key = `chatStore.blobStores.${BUILTIN_BLOB_STORE}`;
  const store = config.chatStore.blobStores[BUILTIN_BLOB_STORE];
  if (store === undefined) {
    throw new LetheError(
      ErrorCode.USAGE,
      `the reference store keeps its files outside the database: give --files DIR, or set ${key}: { url: file:///srv/chat/files } in the config`,
    );
  }
  const where = parseBlobStoreUrl(store.url);
  if ('problem' in where)
    throw new LetheError(ErrorCode.CONFIG_INVALID, `${key}.url: ${where.problem}`);
  if (where.kind !== 'file') {
    throw new LetheError(
      ErrorCode.USAGE,
      `${key} is an s3:// store; lethe seed writes files into a directory only: give --files DIR (then copy it into the bucket)`,
    );
  }
  return where.dir;
}

export const seedCommand: Command = {
  name: 'seed',
  usage: 'seed --scale small|medium|large [--seed N] [--files DIR] [--json] [--config FILE]',
  options: { scale: { type: 'string' }, seed: { type: 'string' }, files: { type: 'string' } },
  async run(ctx) {
    const scale = parseScale(stringOpt(ctx.values, 'scale'));
    const seedText = stringOpt(ctx.values, 'seed');
    const seed = seedText === undefined ? undefined : Number(seedText);
    if (seed !== undefined && !Number.isSafeInteger(seed)) {
      throw new LetheError(
        ErrorCode.USAGE,
        `--seed must be a whole number; got "${seedText ?? ''}"`,
      );
    }
    const rt = await ctx.runtime();
    const filesDir = seedFilesDir(rt.config, stringOpt(ctx.values, 'files'));
    const stats = await seedChatStore(await rt.chatStoreUrl(), {
      scale,
      filesDir,
      ...(seed === undefined ? {} : { seed }),
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(seedUpdate(p)),
    });
    if (ctx.json) ctx.out(JSON.stringify(stats));
    else {
      const total = Object.values(stats.rows).reduce((a, b) => a + b, 0);
      ctx.out(
        `seeded the ${stats.scale} reference store (seed ${stats.seed}): ${total} rows, ${bytes(stats.bytes)} in the database, ` +
          `${stats.files.count} files (${bytes(stats.files.bytes)}) in ${stats.files.dir}, in ${duration(stats.durationMs)}`,
      );
    }
    return ExitCode.OK;
  },
};
