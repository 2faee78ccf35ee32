import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const bin = (name: string): string =>
  fileURLToPath(new URL(`../../../bin/${name}`, import.meta.url));

/**
 * bin/lethe.js and bin/lethe-bench.js run the compiled dist/. A checkout that was never built
 * must get exit 2 (nothing done) and the command that fixes it, not a module-resolution stack.
 */
describe('the launchers without dist/', () => {
  const root = mkdtempSync(join(tmpdir(), 'lethe-no-dist-'));
  mkdirSync(join(root, 'bin'));
  writeFileSync(join(root, 'package.json'), '{ "type": "module" }\n');
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it.each([
    ['lethe.js', 'dist/src/cli/main.js'],
    ['lethe-bench.js', 'dist/bench/main.js'],
  ])('%s exits 2 and says to build', (name, missing) => {
    copyFileSync(bin(name), join(root, 'bin', name));
    const run = spawnSync(process.execPath, [join(root, 'bin', name), '--help'], {
      encoding: 'utf8',
    });
    expect(run.status).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(join(root, missing));
    expect(run.stderr).toContain('npm run build');
    expect(run.stderr).toContain('npm ci');
  });
});
