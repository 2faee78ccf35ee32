import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { letheNodeFlags } from '../../../bench/lethe-phase.ts';
import { DaemonSchema } from '../../../src/config/schema.ts';
import { ROOT } from './support.ts';

interface Instruction { op: string; args: string; line: number }

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i] ?? '';
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\')) line = `${line.slice(0, -1)} ${(lines[++i] ?? '').trim()}`;
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`Dockerfile:${start + 1}: not an instruction: ${line}`);
    out.push({ op: m[1] ?? '', args: (m[2] ?? '').trim(), line: start + 1 });
  }
  return out;
}

/** The JSON (exec) form of CMD, ENTRYPOINT or HEALTHCHECK CMD. */
const execForm = (args: string): string[] => JSON.parse(args.replace(/^.*?CMD\s+/, '')) as string[];

/**
 * The image: a supported Node LTS pinned to a patch release, the compiled daemon as a
 * non-root user whose uid the Kubernetes manifests run as, a HEALTHCHECK without curl,
 * nothing from the build stage but what runs. (No Docker engine runs here, so the image is
 * not built by the tests; the unit tests run the probe and the launcher it uses.)
 */
describe('Dockerfile', () => {
  let steps: Instruction[];
  const all = (op: string): Instruction[] => steps.filter((s) => s.op === op);
  beforeAll(async () => {
    steps = instructions(await readFile(new URL('Dockerfile', ROOT), 'utf8'));
  });

  it('builds and runs on one Node LTS release, pinned to major.minor.patch, Debian bookworm slim', async () => {
    const arg = all('ARG').find((s) => s.args.startsWith('NODE_IMAGE='))?.args ?? '';
    const m = /^NODE_IMAGE=node:(\d+)\.(\d+)\.(\d+)-bookworm-slim$/.exec(arg);
    expect(m, arg).not.toBeNull();
    const major = Number(m?.[1]);
    // Even majors are the LTS lines; 20 reached its end of life in April 2026.
    expect(major % 2).toBe(0);
    expect(major).toBeGreaterThanOrEqual(22);
    expect(all('FROM').map((s) => s.args)).toEqual(['${NODE_IMAGE} AS build', '${NODE_IMAGE} AS runtime']);
    // package.json's engines admit it (and still the Node 20 this repository's CI runs on).
    const engines = (JSON.parse(await readFile(new URL('package.json', ROOT), 'utf8')) as { engines: { node: string } }).engines.node;
    const floor = Number(/^>=(\d+)/.exec(engines)?.[1]);
    expect(floor).toBeLessThanOrEqual(Math.min(major, 20));
  });

  it('runs as the non-root uid and gid the Kubernetes manifests use', async () => {
    const user = all('USER').at(-1)?.args ?? '';
    expect(user).toMatch(/^\d+:\d+$/);
    const [uid, gid] = user.split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    const run = all('RUN').map((s) => s.args).join('\n');
    expect(run).toContain(`useradd --system --uid ${uid} --gid ${gid}`);
    const manifests = await readFile(new URL('jobs/kubernetes/daemon.yaml', ROOT), 'utf8');
    const deployment = parseAllDocuments(manifests, { version: '1.1' })[0]?.toJS() as { spec: { template: { spec: { securityContext: { runAsUser: number; fsGroup: number } } } } };
    expect(deployment.spec.template.spec.securityContext).toMatchObject({ runAsUser: uid, fsGroup: gid });
  });

  it('starts the daemon by default, with the heap flags of bin/lethe.js and core dumps off', () => {
    expect(execForm(all('ENTRYPOINT').at(-1)?.args ?? '[]')).toEqual([
      '/bin/sh',
      '-c',
      `ulimit -c 0 && exec node ${letheNodeFlags().join(' ')} /app/bin/lethe.js "$@"`,
      'lethe',
    ]);
    expect(execForm(all('CMD').at(-1)?.args ?? '[]')[0]).toBe('daemon');
  });

  it('its entrypoint, run as written, leaves node with no core dumps, its own pid, arguments, signals and exit code', async () => {
    const [shell, flag, script, zero] = execForm(all('ENTRYPOINT').at(-1)?.args ?? '[]');
    const dir = await mkdtemp(join(tmpdir(), 'lethe-entrypoint-'));
    try {
      // Stands in for /app/bin/lethe.js: reports what node got, then exits as asked or waits for a signal.
      const probe = join(dir, 'probe.mjs');
      await writeFile(
        probe,
        `import { readFileSync } from 'node:fs';
const core = /^Max core file size\\s+(\\S+)\\s+(\\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
process.stdout.write(JSON.stringify({ pid: process.pid, ppid: process.ppid, execArgv: process.execArgv, argv: process.argv.slice(2), soft: core?.[1], hard: core?.[2] }) + '\\n');
if (process.argv[2] === 'wait') setInterval(() => undefined, 1000); else process.exitCode = Number(process.argv[2]);
`,
      );
      const start = (args: string[]): ChildProcess =>
        // Started with core files allowed (as a container runtime may start it), through an
        // exec, so the entrypoint's shell keeps the pid: the entrypoint must turn them off itself.
        spawn('/bin/sh', ['-c', 'ulimit -S -c unlimited; exec "$@"', 'allow-cores', shell ?? '', flag ?? '', (script ?? '').replace('/app/bin/lethe.js', probe), zero ?? '', ...args], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
      const report = async (child: ChildProcess): Promise<{ out: Record<string, unknown>; code: number | null; signal: string | null }> => {
        let text = '';
        child.stdout?.setEncoding('utf8').on('data', (t: string) => (text += t));
        const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
        return { out: JSON.parse(text) as Record<string, unknown>, code, signal };
      };

      const exited = start(['4', 'two words', '--json']);
      const { out, code } = await report(exited);
      expect(out).toMatchObject({ soft: '0', hard: '0', execArgv: letheNodeFlags(), argv: ['4', 'two words', '--json'] });
      // exec: node is the process that was started (no shell in between), its parent the starter.
      expect(out['pid']).toBe(exited.pid);
      expect(out['ppid']).toBe(process.pid);
      expect(code).toBe(4);

      const waiting = start(['wait']);
      const waited = report(waiting);
      await new Promise((r) => waiting.stdout?.once('data', r));
      waiting.kill('SIGTERM');
      expect((await waited).signal).toBe('SIGTERM');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('checks health with node and bin/lethe-probe.js on the daemon’s default address, not curl', () => {
    const check = all('HEALTHCHECK').at(-1)?.args ?? '';
    const listen = DaemonSchema.parse({}).listen;
    expect(execForm(check)).toEqual(['node', '/app/bin/lethe-probe.js', `http://${listen}/healthz`]);
    expect(check).toMatch(/--interval=\d+s --timeout=\d+s --start-period=\d+s --retries=\d+/);
    expect(all('COPY').some((s) => /--from=build .*\/app\/bin\/lethe-probe\.js .*\.\/bin\/$/.test(s.args))).toBe(true);
    expect(all('RUN').map((s) => s.args).join('\n')).not.toMatch(/\b(curl|wget)\b/);
    expect(all('EXPOSE').map((s) => s.args)).toEqual([listen.split(':')[1]]);
  });

  it('copies into the runtime stage only what runs, and only paths that exist', () => {
    const runtime = steps.slice(steps.findIndex((s) => s.op === 'FROM' && s.args.endsWith('AS runtime')));
    const copies = runtime.filter((s) => s.op === 'COPY').map((s) => s.args.split(/\s+/));
    for (const words of copies) {
      const fromBuild = words[0] === '--from=build';
      const sources = words.slice(fromBuild ? 1 : 0, -1);
      for (const source of sources) {
        // What the build stage has is what `npm ci` (build) leaves in the checkout.
        const local = fromBuild ? source.replace(/^\/app\//, '') : source;
        if (local === 'node_modules') continue;
        expect(existsSync(fileURLToPath(new URL(local, ROOT))), source).toBe(true);
        expect(local, source).not.toMatch(/^(src|test|bench|tsconfig)/);
      }
    }
    const build = steps.filter((s) => s.op === 'RUN' && s.args.includes('npm ci'));
    expect(build.map((s) => s.args)).toEqual(['npm ci && npm prune --omit=dev']);
  });

  it('keeps NODE_ENV=production and the config path the jobs use', () => {
    const env = all('ENV').map((s) => s.args).join(' ');
    expect(env).toContain('NODE_ENV=production');
    expect(env).toContain('LETHE_CONFIG=/etc/lethe/lethe.yaml');
  });
});
