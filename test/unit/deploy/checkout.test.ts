import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './support.ts';

const root = fileURLToPath(ROOT);

/** Runs `file` (an executable, started through its shebang as a user would) from the checkout. */
function start(file: string, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: root, env }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

/**
 * The README's way to run the CLI from a checkout (`./bin/lethe.js …`) works offline and
 * concurrently, and the run-time path writes no TypeScript loader cache (a read-only root
 * file system in Kubernetes needs only /tmp, which lethe uses for its own spool files).
 */
describe('running lethe from a checkout', () => {
  let home: string;
  let temp: string;
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lethe-home-'));
    temp = await mkdtemp(join(tmpdir(), 'lethe-tmp-'));
  });
  afterAll(async () => {
    await rm(home, { recursive: true, force: true });
    await rm(temp, { recursive: true, force: true });
  });

  it('is documented as ./bin/lethe.js, and npx lethe appears nowhere in the docs, jobs or runbooks', async () => {
    const readme = await readFile(new URL('README.md', ROOT), 'utf8');
    expect(readme).toContain('./bin/lethe.js COMMAND');
    const offenders: string[] = [];
    for (const dir of ['', 'docs/', 'jobs/', 'runbooks/', 'config/', 'src/']) {
      const base = new URL(dir, ROOT);
      const entries = dir === '' ? ['README.md'] : await filesUnder(fileURLToPath(base));
      // src/: what lethe itself prints (the demo's "try it yourself" lines).
      for (const entry of entries.filter((e) => /\.(md|ya?ml|service|timer|sh|ts)$|Dockerfile/.test(e))) {
        const text = await readFile(new URL(entry, base), 'utf8');
        for (const [n, line] of text.split('\n').entries()) {
          // The README explains why not npx lethe; any other mention is an instruction to use it.
          if (/\bnpx lethe\b|npm exec (--offline )?lethe\b/.test(line) && !line.includes('Not `npx lethe`')) {
            offenders.push(`${dir}${entry}:${n + 1}: ${line.trim()}`);
          }
        }
      }
    }
    expect(offenders).toEqual([]);
  });

  it('runs twice at once, offline, with an empty home and no npm', async () => {
    // PATH holds node and the shell tools only; npm could not be reached even if asked.
    const env = { PATH: `${join(process.execPath, '..')}:/usr/bin:/bin`, HOME: home, TMPDIR: temp, npm_config_offline: 'true' };
    const [first, second, third] = await Promise.all([
      start('./bin/lethe.js', ['--help'], env),
      start('./bin/lethe.js', ['--help'], env),
      start('./bin/lethe.js', ['snapshots', '--help'], env),
    ]);
    for (const run of [first, second, third]) {
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    }
    expect(first.stdout).toMatch(/^lethe — /);
    expect(second.stdout).toBe(first.stdout);
  });

  it('writes nothing to the home or temp directory on the way (no TypeScript loader cache)', async () => {
    const env = { PATH: `${join(process.execPath, '..')}:/usr/bin:/bin`, HOME: home, TMPDIR: temp, XDG_CACHE_HOME: join(home, '.cache') };
    const run = await start('./bin/lethe.js', ['--help'], env);
    expect(run.code).toBe(0);
    expect(await filesUnder(home)).toEqual([]);
    expect(await filesUnder(temp)).toEqual([]);
  });

  it('runs compiled JavaScript only: no TypeScript loader is a dependency or imported by dist/', async () => {
    const pkg = JSON.parse(await readFile(new URL('package.json', ROOT), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const loader of ['tsx', 'ts-node', 'typescript', '@swc-node/register', 'esbuild-register']) {
      expect(pkg.dependencies[loader], loader).toBeUndefined();
    }
    const dist = fileURLToPath(new URL('dist/src/', ROOT));
    const imports: string[] = [];
    for (const file of (await filesUnder(dist)).filter((f) => f.endsWith('.js'))) {
      const text = await readFile(join(dist, file), 'utf8');
      for (const m of text.matchAll(/(?:from|import\()\s*['"]([^'"]+)['"]/g)) {
        const spec = m[1] ?? '';
        if (/^(tsx|ts-node|typescript)(\/|$)/.test(spec) || spec.endsWith('.ts')) imports.push(`${file}: ${spec}`);
      }
    }
    expect(imports).toEqual([]);
    const launcher = await readFile(new URL('bin/lethe.js', ROOT), 'utf8');
    expect(launcher).toContain("new URL('../dist/src/cli/main.js', import.meta.url)");
  });
});
