// Runs the real age CLI (and openssl) (no shell: arguments are never parsed, secrets never on a command line).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Command = readonly [file: 'age' | 'age-keygen' | 'openssl', args: readonly string[]];

/** Runs `commands` as a pipeline (stdout of each into stdin of the next) and returns the last stdout. */
export async function pipeline(commands: readonly Command[], input?: Uint8Array): Promise<Buffer> {
  const children = commands.map(([file, args]) =>
    spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] }),
  );
  const exits = children.map((child, i) => exited(child, commands[i]?.[0] ?? '?'));
  for (const [i, child] of children.entries()) {
    const next = children[i + 1];
    if (next !== undefined) child.stdout.pipe(next.stdin);
  }
  const first = children[0];
  const last = children[children.length - 1];
  if (first === undefined || last === undefined) throw new Error('empty pipeline');
  first.stdin.end(input ?? new Uint8Array());
  const chunks: Buffer[] = [];
  last.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
  await Promise.all(exits);
  return Buffer.concat(chunks);
}

/** Runs one age command. */
export function run(
  file: Command[0],
  args: readonly string[],
  input?: Uint8Array,
): Promise<Buffer> {
  return pipeline([[file, args]], input);
}

function exited(child: ChildProcessWithoutNullStreams, name: string): Promise<void> {
  const stderr: Buffer[] = [];
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  // A process that fails early may close its stdin while we still write to it.
  child.stdin.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${name} exited ${String(code)}: ${Buffer.concat(stderr).toString()}`));
    });
  });
}

/** A fresh private temp dir (0700). */
export async function privateTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-age-cli-'));
  await chmod(dir, 0o700);
  return dir;
}

/** Writes an identity file (mode 0600) the way age-keygen does, and returns its path. */
export async function identityFile(dir: string, name: string, identity: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `${identity}\n`, { mode: 0o600, flag: 'wx' });
  return path;
}
