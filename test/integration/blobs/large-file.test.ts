import { createCipheriv, createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gnuTimeAvailable, spawnMeasured, type ProcessStats } from '../../../bench/measured-process.ts';
import { initialize } from '../../../src/jobs/tasks.ts';
import { createLetheEnv, REPO_ROOT, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { sweepSize } from '../../helpers/sweep.ts';

/**
 * Issue 12, item 2: a file outside the database backs up and restores with bounded memory.
 * The file is 256 MiB in the normal run and 1 GiB in the full sweep (LETHE_SWEEP=full);
 * both must keep the lethe process's peak RSS (GNU time's maximum resident set size, or
 * the kernel's VmHWM sampled from /proc) under 300 MB, through backup and restore alike.
 */

const MIB = 1024 * 1024;
const SIZE = sweepSize() === 'full' ? 1024 * MIB : 256 * MIB;
const LIMIT = 300 * 1000 * 1000;

const DDL = `
CREATE TABLE public.uploads (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, owner_id bigint NOT NULL, location text);
INSERT INTO public.uploads VALUES (1, 1, 10, 'big/video.bin');
`;

const MAPPING = {
  tables: {
    uploads: { class: 'attachments', primaryKey: ['id'], tenant: 'tenant_id', author: 'owner_id', blob: { column: 'location', store: 'files' } },
  },
};

/** Writes `size` bytes of AES-CTR keystream (incompressible, not sparse) to `path`; returns their sha256. */
async function writeKeystream(path: string, size: number): Promise<string> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(4 * MIB);
  const hash = createHash('sha256');
  const out = createWriteStream(path);
  for (let written = 0; written < size; written += zeros.length) {
    const chunk = cipher.update(zeros.subarray(0, Math.min(zeros.length, size - written)));
    hash.update(chunk);
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
  return hash.digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe(`a ${SIZE / MIB} MiB file outside the database`, () => {
  let template: TestDatabase;
  let chat: TestDatabase;
  let env: LetheEnv;
  let digest: string;

  /** Runs the CLI measured; stdout is returned, peak RSS must stay under the limit. */
  const measured = async (args: string[]): Promise<{ stats: ProcessStats; stdout: string }> => {
    const useGnuTime = await gnuTimeAvailable();
    const env2: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LETHE_') && !k.startsWith('PG')) env2[k] = v;
    const run = spawnMeasured(process.execPath, [join(REPO_ROOT, 'bin', 'lethe.js'), ...args], {
      env: env2,
      stdio: ['ignore', 'pipe', 'pipe'],
      reportFile: join(env.dir, `time-${args[0] ?? 'x'}.txt`),
      useGnuTime,
    });
    let stdout = '';
    run.child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    const stats = await run.done;
    if (stats.exitCode !== 0) throw new Error(`lethe ${args.join(' ')} exited ${String(stats.exitCode)}\n${stdout}\n${stats.stderr}`);
    return { stats, stdout };
  };

  beforeAll(async () => {
    template = await createTestDatabase('blob_big_tpl');
    const c = new pg.Client({ connectionString: template.url });
    await c.connect();
    await c.query(DDL);
    await c.end();
    chat = await createTestDatabase('blob_big', template.name);
    env = await createLetheEnv({
      template: template.name,
      backup: { packSizeMiB: 64 },
      config: { chatStore: { database: { url: chat.url }, mapping: MAPPING, blobStores: { files: { url: 'files' } } } },
    });
    await mkdir(join(env.dir, 'files', 'big'), { recursive: true });
    digest = await writeKeystream(join(env.dir, 'files', 'big', 'video.bin'), SIZE);
    await initialize(env.rt, 'test');
  }, 120_000);

  afterAll(async () => {
    await env.cleanup();
    await chat.drop();
    await template.drop();
  });

  it('backs up and restores byte for byte with peak RSS under 300 MB', async () => {
    const backedUp = await measured(['backup', '--config', env.configPath, '--json']);
    const result = JSON.parse(backedUp.stdout) as { blobs: { written: number; bytesPlain: number } };
    expect(result.blobs.written).toBe(1);
    expect(result.blobs.bytesPlain).toBeGreaterThan(SIZE);
    expect(backedUp.stats.peakRssBytes).not.toBeNull();
    expect(backedUp.stats.peakRssBytes ?? Infinity).toBeLessThan(LIMIT);

    const target = await env.database('blob_big_rs');
    const dir = join(env.dir, 'restored');
    const restored = await measured(['restore', '--config', env.configPath, '--snapshot', 'latest', '--target', target.url, '--blob-target', `file://${dir}`, '--json']);
    expect((JSON.parse(restored.stdout) as { blobs: number }).blobs).toBe(1);
    expect(restored.stats.peakRssBytes ?? Infinity).toBeLessThan(LIMIT);
    expect(await sha256File(join(dir, 'big', 'video.bin'))).toBe(digest);
    console.log(`${SIZE / MIB} MiB file: backup ${Math.round(backedUp.stats.wallMs)} ms, peak RSS ${Math.round((backedUp.stats.peakRssBytes ?? 0) / 1e6)} MB; restore ${Math.round(restored.stats.wallMs)} ms, peak RSS ${Math.round((restored.stats.peakRssBytes ?? 0) / 1e6)} MB`);
  }, 600_000);
});
