#!/usr/bin/env -S node --max-old-space-size=128
// Runs the TypeScript CLI directly: the checkout and the container image run the same sources.
//
// The heap cap on the line above is part of lethe's memory bound (docs/benchmarks.md): left
// alone, V8 grows its old space far past what a backup keeps alive instead of collecting.
// It is a flag of this very process, not a wrapper's, so signals and exit codes (SIGKILL in
// the crash tests, exit 4 on a held lock) are lethe's own. Invocations that name node
// explicitly pass the same flag: package.json `demo`, the Dockerfile, jobs/, the benchmark
// (which reads it from this line); test/unit/bin/heap-flag.test.ts checks they agree.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
