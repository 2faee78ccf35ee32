import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const run = promisify(execFile);

interface Container {
  command: string[];
  args: string[];
  env: { name: string; value: string }[];
}

/**
 * The sharded backup's Indexed Job runs one coordinator and K workers: the shell line in
 * its container must give index 0 `--coordinate K` and index i `--shard i-1/K`.
 */
describe('jobs/kubernetes/backup-sharded-cronjob.yaml', () => {
  let dir: string;
  let job: { spec: { jobTemplate: { spec: { completionMode: string; completions: number; parallelism: number; template: { spec: { containers: Container[] } } } } } };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-k8s-'));
    // A stand-in `node` that prints the arguments it was given.
    await writeFile(join(dir, 'node'), '#!/bin/sh\necho "$@"\n');
    await chmod(join(dir, 'node'), 0o755);
    job = parse(await readFile(new URL('../../../jobs/kubernetes/backup-sharded-cronjob.yaml', import.meta.url), 'utf8')) as typeof job;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('runs one coordinator and SHARDS workers, all at once', () => {
    const spec = job.spec.jobTemplate.spec;
    const container = spec.template.spec.containers[0] as Container;
    const shards = Number(container.env.find((e) => e.name === 'SHARDS')?.value);
    expect(spec.completionMode).toBe('Indexed');
    expect(spec.completions).toBe(shards + 1);
    expect(spec.parallelism).toBe(shards + 1);
  });

  it('gives index 0 the coordinator and index i the shard i-1 of K', async () => {
    const container = job.spec.jobTemplate.spec.template.spec.containers[0] as Container;
    const shards = container.env.find((e) => e.name === 'SHARDS')?.value ?? '';
    const lines: string[] = [];
    for (let index = 0; index <= Number(shards); index++) {
      const [shell, flag] = container.command;
      const { stdout } = await run(shell ?? '', [flag ?? '', container.args[0] ?? ''], {
        env: { PATH: `${dir}:/usr/bin:/bin`, JOB_COMPLETION_INDEX: String(index), SHARDS: shards },
      });
      lines.push(stdout.trim().replace(/^.*lethe\.js /, ''));
    }
    expect(lines).toEqual([
      'backup --coordinate 3 --wait 1800 --json',
      'backup --shard 0/3 --wait 1800 --json',
      'backup --shard 1/3 --wait 1800 --json',
      'backup --shard 2/3 --wait 1800 --json',
    ]);
  });
});
