#!/usr/bin/env node
// Runs the benchmark compiled to dist/ by the install step, as bin/lethe.js runs the CLI.
// See docs/benchmarks.md.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/bench/main.js', import.meta.url);
if (!existsSync(main)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  process.stderr.write(
    `lethe-bench: ${fileURLToPath(main)} is missing: the benchmark runs compiled JavaScript from dist/.\n` +
      `Build it with \`npm run build\` (or install with \`npm ci\`, which builds) in ${root}\n`,
  );
  process.exit(2);
}
await import(main.href);
