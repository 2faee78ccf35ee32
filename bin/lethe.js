#!/usr/bin/env -S node --max-old-space-size=128 --max-semi-space-size=8
// Runs the CLI compiled to dist/ by the install step (`npm ci` runs `prepare`, which is
// `npm run build`): no TypeScript compiler is loaded at run time (docs/benchmarks.md,
// "Start-up"). The checkout, the jobs and the container image all run this same dist/.
//
// The heap flags on the line above are part of lethe's memory bound (docs/benchmarks.md):
// left alone, V8 grows its old space far past what a backup keeps alive instead of
// collecting, and a 16 MiB semi-space (the young generation is three of them) costs about
// 20 MB of resident memory for no measurable speed. They are flags of this very process,
// not a wrapper's, so signals and exit codes (SIGKILL in the crash tests, exit 4 on a held
// lock) are lethe's own. Invocations that name node explicitly pass the same flags:
// package.json `demo`, the Dockerfile, jobs/, the benchmark (which reads them from this
// line); test/unit/bin/heap-flag.test.ts checks they agree.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
// Checked before importing: an import error would not say whether dist/ or a dependency is missing.
if (!existsSync(main)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  process.stderr.write(
    `lethe: ${fileURLToPath(main)} is missing: the CLI runs compiled JavaScript from dist/.\n` +
      `Build it with \`npm run build\` (or install with \`npm ci\`, which builds) in ${root}\n`,
  );
  process.exit(2);
}
await import(main.href);
