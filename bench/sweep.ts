// `npm run test:sweep [-- --json] [-- --seed N] [-- --only FILE]`: runs every sweep of
// test/sweep/ at full size (LETHE_SWEEP=full) through vitest, on the same real PostgreSQL,
// s3rver and age the test suite uses, then prints the figures each sweep recorded
// (test/helpers/sweep.ts) as a table, or as one JSON document with --json. Exits 3 when a
// sweep failed or missed its target. docs/reliability.md explains each figure.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

type Figures = Record<string, unknown>;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { json: { type: 'boolean' }, seed: { type: 'string' }, only: { type: 'string' } },
    strict: true,
  });
  if (values.seed !== undefined && !/^-?\d+$/.test(values.seed)) {
    process.stderr.write(`--seed must be an integer, got ${JSON.stringify(values.seed)}\n`);
    return 2;
  }
  const out = await mkdtemp(join(tmpdir(), 'lethe-sweep-'));
  try {
    const files = values.only === undefined ? ['test/sweep'] : [`test/sweep/${values.only}`];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      LETHE_SWEEP: 'full',
      LETHE_SWEEP_OUT: out,
      ...(values.seed === undefined ? {} : { LETHE_SWEEP_SEED: values.seed }),
    };
    const vitest = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...files, '--testTimeout', '3600000', '--hookTimeout', '600000'], {
      env,
      // With --json, stdout carries only the document: vitest's own report goes to stderr.
      stdio: ['ignore', values.json === true ? process.stderr : 'inherit', 'inherit'],
    });
    const code = await new Promise<number>((resolve) => vitest.on('close', (c) => resolve(c ?? 1)));
    const figures: Record<string, Figures> = {};
    for (const name of (await readdir(out)).filter((f) => f.endsWith('.json')).sort()) {
      const { key, ...rest } = JSON.parse(await readFile(join(out, name), 'utf8')) as { key: string } & Figures;
      figures[key] = rest;
    }
    if (values.json === true) {
      process.stdout.write(`${JSON.stringify({ ok: code === 0, ...figures })}\n`);
    } else {
      process.stdout.write('\nsweep figures\n');
      for (const [key, f] of Object.entries(figures)) {
        process.stdout.write(`\n${key}\n`);
        for (const [name, value] of Object.entries(f)) process.stdout.write(`  ${name.padEnd(28)} ${String(value)}\n`);
      }
      process.stdout.write(`\n${code === 0 ? 'every sweep met its targets' : 'a sweep FAILED or missed its target: see above'}\n`);
    }
    return code === 0 ? 0 : 3;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

process.exitCode = await main();
