import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLetheEnv, expectExit, fileDigests, REPO_ROOT, type CliResult, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate } from '../e2e/tiny-chat-store.ts';
import { holdDemoDefaultPort } from '../../helpers/ports.ts';

/**
 * What a person and a script see of the CLI: usage errors, the progress line on a terminal
 * (and nothing of it when piped), readable warnings instead of pino's JSON lines, and with
 * --json exactly one JSON document on stdout from every command a script would run.
 */

/** Carriage returns and escape sequences: what a progress line is made of. */
// eslint-disable-next-line no-control-regex
const TERMINAL_CODES = /\r|\x1b\[/;

/** The single JSON document a --json command printed: stdout must hold one line, and it must parse. */
function oneDocument(result: CliResult): Record<string, unknown> {
  const lines = result.stdout.split('\n').filter((l) => l.trim() !== '');
  expect(lines, `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toHaveLength(1);
  const doc: unknown = JSON.parse(lines[0] ?? '');
  expect(typeof doc === 'object' && doc !== null && !Array.isArray(doc)).toBe(true);
  return doc as Record<string, unknown>;
}

/** Runs `lethe ARGS` on a pseudo-terminal (util-linux `script`) COLUMNS wide; returns everything it wrote, and how long it ran. */
async function onTerminal(cwd: string, args: readonly string[], columns = 200): Promise<{ code: number | null; text: string; seconds: number }> {
  const quoted = [process.execPath, join(REPO_ROOT, 'bin', 'lethe.js'), ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LETHE_') && !k.startsWith('PG')) env[k] = v;
  const started = performance.now();
  const child = spawn('script', ['-qfec', `stty cols ${columns}; exec ${quoted}`, '/dev/null'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (text += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (text += t));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, text, seconds: (performance.now() - started) / 1000 };
}

/** The progress frames drawn (each starts by erasing the line), without control codes. */
function frames(text: string): string[] {
  return text
    .split('\r\x1b[2K')
    .slice(1)
    .map((f) => f.split(/\r?\n/)[0] ?? '')
    .filter((f) => f !== '');
}

describe('lethe output for people and scripts', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let releaseDemoPort: () => Promise<void> = () => Promise.resolve();
  const cli = (args: readonly string[], options?: Parameters<LetheEnv['cli']>[1]): Promise<CliResult> => env.cli([...args, '--config', env.configPath], options);

  beforeAll(async () => {
    // The demo below must not race another test file's demo for the default port.
    releaseDemoPort = await holdDemoDefaultPort();
    template = await createTinyChatTemplate('cli_output_tpl');
    env = await createLetheEnv({ template: template.name });
  });

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    await releaseDemoPort();
  });

  describe('usage errors', () => {
    it('no command prints the help on stderr and exits 2', async () => {
      const result = await env.cli([]);
      expectExit(result, 2);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^lethe: no command given\n/);
      expect(result.stderr).toContain('usage: lethe <command> [options]');
      expect(result.stderr).toContain('lifecycle apply');
    });

    it('help asked for goes to stdout with exit 0', async () => {
      for (const word of ['help', '--help', '-h']) {
        const result = await env.cli([word]);
        expectExit(result, 0);
        expect(result.stdout).toContain('usage: lethe <command> [options]');
      }
    });

    it('an unknown command is named, with the closest command and the short usage line, not the whole help', async () => {
      const result = await env.cli(['bakcup', '--config', env.configPath]);
      expectExit(result, 2);
      expect(result.stderr).toBe('lethe: unknown command "bakcup" (did you mean `lethe backup`?)\nusage: lethe <command> [options]   (`lethe help` lists the commands)\n');
      const far = await env.cli(['frobnicate']);
      expectExit(far, 2);
      expect(far.stderr).toBe('lethe: unknown command "frobnicate"\nusage: lethe <command> [options]   (`lethe help` lists the commands)\n');
    });

    it('a group word names its subcommands', async () => {
      const alone = await env.cli(['hold']);
      expectExit(alone, 2);
      expect(alone.stderr).toMatch(/^lethe: `lethe hold` needs a subcommand: hold takes place, release, list\n/);
      const typo = await env.cli(['erase', 'aprove', 'x']);
      expectExit(typo, 2);
      expect(typo.stderr).toContain('unknown command "erase aprove": erase takes request, approve, list, show (did you mean `lethe erase approve`?)');
    });

    it('with --json the usage error is a JSON document on stdout', async () => {
      const result = await env.cli(['nosuch', '--json']);
      expectExit(result, 2);
      expect(oneDocument(result)).toEqual({ error: { code: 'USAGE', message: expect.stringContaining('unknown command "nosuch"') as string } });
    });
  });

  describe('--json everywhere a script would use it', () => {
    const seen: Record<string, Record<string, unknown>> = {};
    const json = async (name: string, args: readonly string[], code = 0): Promise<Record<string, unknown>> => {
      const result = await cli([...args, '--json']);
      expectExit(result, code);
      // Without a terminal nothing but the warnings' own lines reaches stderr: no progress codes.
      expect(result.stderr).not.toMatch(TERMINAL_CODES);
      seen[name] = oneDocument(result);
      return seen[name];
    };

    it('init, backup, snapshots, verify, restore, audit verify, keys export', async () => {
      expect(await json('init', ['init'])).toMatchObject({ vaultSchema: 'lethe' });
      const backup = await json('backup', ['backup']);
      expect(backup).toMatchObject({ snapshotId: expect.any(String) as string });
      const snapshots = await json('snapshots', ['snapshots']);
      expect((snapshots['snapshots'] as unknown[]).length).toBe(1);
      expect(await json('verify', ['verify'])).toMatchObject({ ok: true });
      const target = await env.database('cli_output_restore');
      expect(await json('restore', ['restore', '--snapshot', 'latest', '--target', target.url, '--blob-target', env.blobTarget()])).toMatchObject({ snapshotId: backup['snapshotId'] });
      expect(await json('audit verify', ['audit', 'verify'])).toMatchObject({ ok: true });
      expect(await json('keys export', ['keys', 'export', '--out', join(env.dir, 'keys.json')])).toMatchObject({ dimensionKeys: expect.any(Number) as number });
    });

    it('hold place, hold list, export, hold release', async () => {
      expect(await json('hold place', ['hold', 'place', '--case', 'CASE-1', '--tenant', '3', '--reason', 'litigation', '--actor', 'legal'])).toMatchObject({ caseId: 'CASE-1' });
      expect(((await json('hold list', ['hold', 'list']))['holds'] as unknown[]).length).toBe(1);
      expect(await json('export', ['export', '--case', 'CASE-1', '--out', join(env.dir, 'export')])).toMatchObject({ caseId: 'CASE-1' });
      expect(await json('hold release', ['hold', 'release', '--case', 'CASE-1', '--actor', 'legal'])).toMatchObject({ caseId: 'CASE-1' });
    });

    it('erase request, list, approve, show', async () => {
      const request = await json('erase request', ['erase', 'request', '--tenant', '4', '--all', '--reason', 'contract ended', '--actor', 'dpo-1']);
      const id = String(request['id']);
      expect(((await json('erase list', ['erase', 'list']))['requests'] as unknown[]).length).toBe(1);
      expect(await json('erase approve', ['erase', 'approve', id, '--actor', 'dpo-2'])).toMatchObject({ id, status: 'executed' });
      expect(await json('erase show', ['erase', 'show', id])).toMatchObject({ request: { id } });
    });

    it('lifecycle plan and apply, vault backup, list and restore', async () => {
      expect(await json('lifecycle plan', ['lifecycle', 'plan'])).toHaveProperty('actions');
      expect(await json('lifecycle apply', ['lifecycle', 'apply', '--actor', 'ops'])).toHaveProperty('plan');
      const written = await json('vault backup', ['vault', 'backup']);
      const listed = await json('vault list', ['vault', 'list']);
      expect((listed['backups'] as { key: string }[]).map((b) => b.key)).toContain(written['key']);
      // The vault restored into a database of its own, as after losing the vault's server.
      const fresh = await env.database('cli_output_vault');
      const restoredConfig = await env.writeConfig('restored.yaml', { ...env.raw, vault: { database: { url: fresh.url }, schema: 'lethe' } });
      const restored = await env.cli(['vault', 'restore', '--from', String(written['key']), '--actor', 'ops', '--config', restoredConfig, '--json']);
      expectExit(restored, 0);
      seen['vault restore'] = oneDocument(restored);
      expect(seen['vault restore']).toMatchObject({ key: written['key'] });
    });

    it('demo', async () => {
      // The embedded server runs as `postgres` when the tests run as root: it must reach the demo's directory.
      await chmod(env.dir, 0o755);
      // Where the README's demo puts it, relative to the working directory (the test's).
      const demo = await json('demo', ['demo', '--dir', 'data/demo']);
      expect(demo).toMatchObject({ verify: { ok: true } });
    }, 300_000);

    it("the README's restore example runs as written against the demo", async () => {
      const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
      const block = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '').find((b) => b.includes('--schema restored'));
      if (block === undefined) throw new Error('README.md has no restore example for the demo');
      const script = block.replaceAll('./bin/lethe.js', `'${process.execPath}' '${join(REPO_ROOT, 'bin', 'lethe.js')}'`);
      const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: env.dir, encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } });
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^restored snapshot \S+: 8 tables, \d+ cells, \d+ rows/);
      // The files outside the database came back byte for byte, each at its key.
      const restoredFiles = await fileDigests(join(env.dir, 'data', 'demo', 'restored-files'));
      expect(Object.keys(restoredFiles).length).toBeGreaterThan(100);
      expect(restoredFiles).toEqual(await fileDigests(join(env.dir, 'data', 'demo', 'chat-files')));
    }, 120_000);

    it('errors are one JSON document too', async () => {
      const result = await cli(['restore', '--snapshot', 'nonesuch', '--target', 'postgres://127.0.0.1:1/x', '--json']);
      expectExit(result, 2);
      expect(oneDocument(result)).toMatchObject({ error: { code: expect.any(String) as string, message: expect.any(String) as string } });
    });

    it('covered every command a script runs', () => {
      expect(Object.keys(seen).sort()).toEqual(
        [
          'init', 'backup', 'snapshots', 'verify', 'restore', 'audit verify', 'keys export',
          'hold place', 'hold list', 'hold release', 'export',
          'erase request', 'erase list', 'erase approve', 'erase show',
          'lifecycle plan', 'lifecycle apply', 'vault backup', 'vault list', 'vault restore', 'demo',
        ].sort(),
      );
    });
  });

  describe('progress and log lines', () => {
    it('verify on a terminal draws a bar with totals, at most ten frames a second', async () => {
      if (spawnSync('script', ['--version']).status !== 0) throw new Error('this test needs util-linux `script` for a pseudo-terminal');
      const run = await onTerminal(env.dir, ['verify', '--config', env.configPath]);
      expect(run.code, run.text).toBe(0);
      // Each frame starts by erasing the line; so does whatever is printed once the progress ends.
      const drawn = frames(run.text).filter((f) => !f.startsWith('lethe: ') && !f.startsWith('snapshot '));
      expect(drawn.length, run.text).toBeGreaterThan(0);
      expect(drawn.length).toBeLessThanOrEqual(Math.ceil(run.seconds * 10) + 2);
      const cells = Number(/\d+\/(\d+) cells verified/.exec(run.text)?.[1] ?? NaN);
      expect(cells).toBeGreaterThan(0);
      for (const frame of drawn) expect(frame).toMatch(new RegExp(`^verify \\[[#-]{20}\\] +\\d+%  \\d+/${cells} cells  \\d+/\\d+ rows`));
    });

    it('a warning the command prints is shown once, readable, never as a JSON log line', async () => {
      // The test server's role is a superuser: verify warns about its scratch database.
      const result = await cli(['verify']);
      expectExit(result, 0);
      expect(result.stderr.match(/connects as a superuser/g)).toHaveLength(1);
      expect(result.stderr).not.toMatch(/^\{/m);
      expect(result.stderr).not.toMatch(TERMINAL_CODES);
    });

    it('a log-only warning reads as one line in human mode, and stays JSON with --json', async () => {
      // A backup killed after planning leaves a running snapshot; the next one abandons it and says so.
      const killed = await cli(['backup'], { env: { LETHE_FAILPOINTS: 'backup.after-plan' } });
      expect(killed.signal).toBe('SIGKILL');
      const human = await cli(['backup']);
      expectExit(human, 0);
      expect(human.stderr).toMatch(/^lethe: warning: marked interrupted snapshots as abandoned \(abandoned=\["\d{8}T\d{6}Z-[0-9a-f]+"\]\)$/m);
      expect(human.stderr).not.toMatch(/^\{/m);

      const killedAgain = await cli(['backup'], { env: { LETHE_FAILPOINTS: 'backup.after-plan' } });
      expect(killedAgain.signal).toBe('SIGKILL');
      const machine = await cli(['backup', '--json']);
      expectExit(machine, 0);
      expect(oneDocument(machine)).toHaveProperty('snapshotId');
      const logLine = machine.stderr.split('\n').find((l) => l.includes('marked interrupted snapshots as abandoned'));
      expect(JSON.parse(logLine ?? '')).toMatchObject({ level: 40, msg: 'marked interrupted snapshots as abandoned' });
    });
  });
});
