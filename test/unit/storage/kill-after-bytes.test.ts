import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFilesystemStore } from '../../../src/storage/index.ts';
import { withKillAfterBytes } from '../../../src/storage/kill-after-bytes.ts';
import { filesUnder, REPO_ROOT } from '../../helpers/lethe-env.ts';

/**
 * LETHE_KILL_AFTER_BYTES (the kill sweep's "by bytes written"): a process whose store has
 * been handed N bytes dies by SIGKILL in the middle of the put that crosses N, leaving no
 * object at that key; without the variable the store is returned untouched.
 */
describe('withKillAfterBytes', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-kill-bytes-'));
    await createFilesystemStore({ path: dir, open: 'create' });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Puts a 1,000-byte object, then a 3 × 1,000-byte streamed one, in a child under `budget`. */
  async function child(budget: string): Promise<{ code: number | null; signal: string | null; out: string }> {
    const script = `
      const { openStore } = await import(${JSON.stringify(join(REPO_ROOT, 'dist', 'src', 'storage', 'index.js'))});
      const store = await openStore({ type: 'filesystem', path: ${JSON.stringify(dir)} });
      await store.put('a/one', new Uint8Array(1000));
      console.log('one');
      await store.put('a/two', (async function* () { for (let i = 0; i < 3; i++) yield new Uint8Array(1000); })());
      console.log('two');`;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, LETHE_KILL_AFTER_BYTES: budget },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
    const [code, signal] = (await once(proc, 'close')) as [number | null, string | null];
    return { code, signal, out };
  }

  it('kills the process inside the put that crosses the budget; nothing half-written is visible', async () => {
    const killed = await child('2500');
    expect(killed).toEqual({ code: null, signal: 'SIGKILL', out: 'one\n' });
    const objects = (await filesUnder(dir)).filter((f) => f.startsWith('a/'));
    expect(objects).toEqual(['a/one']);
  });

  it('lets a run that stays under the budget finish, and is a no-op without the variable', async () => {
    expect(await child('100000')).toEqual({ code: 0, signal: null, out: 'one\ntwo\n' });
    const store = await createFilesystemStore({ path: dir, open: 'existing' });
    delete process.env['LETHE_KILL_AFTER_BYTES'];
    expect(withKillAfterBytes(store)).toBe(store);
    await store.close();
  });
});
