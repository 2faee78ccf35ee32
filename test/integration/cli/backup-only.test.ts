import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLetheEnv, expectExit, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate } from '../e2e/tiny-chat-store.ts';

/**
 * The backup never reads the master key (it wraps new keys to the recipient the vault
 * records), so a backup host's config leaves `masterKey` out. The commands that unwrap keys
 * refuse such a config with CONFIG_INVALID (exit 2) naming `masterKey.file`, not with zod's
 * "expected object, received undefined".
 */
describe('a config without masterKey (a backup-only host)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let backupOnly = '';

  beforeAll(async () => {
    template = await createTinyChatTemplate('cli_backup_only_tpl');
    env = await createLetheEnv({ template: template.name });
    const { masterKey: _masterKey, ...raw } = env.raw;
    backupOnly = await env.writeConfig('backup-only.yaml', raw);
  });

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('cannot make the first init of a vault, and says which field is missing', async () => {
    const result = await env.cli(['init', '--config', backupOnly]);
    expectExit(result, 2);
    expect(result.stderr).toContain('the first `lethe init` of a vault needs the master key');
    expect(result.stderr).toContain('`masterKey: { file: PATH }`');
    expect(result.stderr).not.toContain('received undefined');
  });

  it('backs up once the key holder initialised the vault, and its own init brings the rest up to date', async () => {
    expectExit(await env.cli(['init', '--config', env.configPath]), 0);
    const init = await env.cli(['init', '--config', backupOnly, '--json']);
    expectExit(init, 0);
    expect(jsonOut(init)).toMatchObject({ masterKeyFile: null, masterKeyCreated: false, masterRecipient: expect.stringMatching(/^age1/) as string });
    const result = await env.cli(['backup', '--config', backupOnly, '--json']);
    expectExit(result, 0);
    expect((jsonOut(result) as { cellsWritten: number }).cellsWritten).toBeGreaterThan(0);
  });

  it.each([
    [['verify'], '`lethe verify`'],
    [['restore', '--snapshot', 'latest', '--target', 'postgres://nobody@127.0.0.1:1/x'], '`lethe restore`'],
    [['lifecycle', 'apply', '--actor', 'ops'], '`lethe lifecycle apply`'],
    [['export', '--case', 'C-1', '--out', 'export-dir'], '`lethe export`'],
    [['vault', 'restore', '--from', 'vault/20260101T000000000Z.age'], '`lethe vault restore`'],
  ])('%j refuses with CONFIG_INVALID naming masterKey.file', async (args, what) => {
    const result = await env.cli([...args, '--config', backupOnly, '--json']);
    expectExit(result, 2);
    expect(jsonOut(result)).toEqual({
      error: { code: 'CONFIG_INVALID', field: 'masterKey.file', message: expect.stringContaining(`${what} needs the master key`) as string },
    });
  });
});
