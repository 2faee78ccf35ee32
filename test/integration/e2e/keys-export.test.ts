import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import { createChatTemplate, createLetheEnv, expectExit, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

describe('lethe keys export', () => {
  let template: TestDatabase;
  let env: LetheEnv;

  beforeAll(async () => {
    template = await createChatTemplate('keys_export_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'test');
    await backup(env.rt, { actor: 'test' });
  }, 180_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('writes a complete export (mode 0600) under its name only once it is whole, and never overwrites one', async () => {
    const out = join(env.dir, 'exports', 'keys.json');
    await mkdir(join(env.dir, 'exports'));
    const run = await env.cli(['keys', 'export', '--config', env.configPath, '--out', out, '--json']);
    expectExit(run, 0);
    const result = jsonOut(run) as { dimensionKeys: number };
    const text = await readFile(out, 'utf8');
    const doc = JSON.parse(text) as { format: string; dimensionKeys: unknown[] };
    expect(doc.format).toBe('lethe.keys-export.v2');
    expect(doc.dimensionKeys).toHaveLength(result.dimensionKeys);
    expect(result.dimensionKeys).toBeGreaterThan(0);
    const { mode } = await stat(out);
    expect(mode & 0o777).toBe(0o600);

    const again = await env.cli(['keys', 'export', '--config', env.configPath, '--out', out]);
    expectExit(again, 2);
    expect(again.stderr).toMatch(/EEXIST.*never overwritten/);
    expect(await readFile(out, 'utf8')).toBe(text);
    // Nothing half-written is left beside it.
    expect(await readdir(join(env.dir, 'exports'))).toEqual(['keys.json']);
  });
});
