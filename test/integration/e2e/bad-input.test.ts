import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { initialize } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  type LetheEnv,
  type RawConfig,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: a bad config or a chat store the mapping does not cover stops `lethe backup`
 * before it writes anything, with exit code 2 and a message naming the field, variable
 * or table to fix.
 */

describe('backup refuses bad input and writes nothing', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let auditEntries: number;

  /** Objects in the store, snapshots (any status) and audit entries in the vault. */
  async function written(): Promise<{ objects: string[]; snapshots: number; audit: number }> {
    const vault = await env.rt.vault();
    return {
      // The marker `lethe init` writes at the store's root is not an object.
      objects: (await filesUnder(env.storePath ?? '')).filter((f) => f !== '.lethe-store'),
      snapshots: (await vault.listSnapshots({ includeIncomplete: true })).length,
      audit: (await vault.verifyAuditChain()).entries,
    };
  }

  function variant(change: (raw: RawConfig) => RawConfig): RawConfig {
    return change(structuredClone(env.raw));
  }

  beforeAll(async () => {
    template = await createChatTemplate('e2e_bad_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    auditEntries = (await (await env.rt.vault()).verifyAuditChain()).entries;
    expect(auditEntries).toBeGreaterThan(0);
  });
  beforeEach(async () => {
    expect(await written()).toEqual({ objects: [], snapshots: 0, audit: auditEntries });
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('names an unknown key, a wrongly typed field and an unset ${SECRET}, exit 2 each', async () => {
    const cases = [
      {
        name: 'unknown-key.yaml',
        raw: variant((r) => ({ ...r, backup: { ...(r['backup'] as object), packSizeMB: 8 } })),
        expect: [/unknown key `packSizeMB` in `backup`/],
      },
      {
        name: 'wrong-type.yaml',
        raw: variant((r) => ({ ...r, backup: { ...(r['backup'] as object), packSizeMiB: 'big' } })),
        expect: [/`backup\.packSizeMiB`/, /number/],
      },
      {
        name: 'missing-secret.yaml',
        raw: variant((r) => ({
          ...r,
          vault: {
            ...(r['vault'] as object),
            database: { url: 'postgres://lethe:${LETHE_E2E_UNSET_SECRET}@127.0.0.1:1/vault' },
          },
        })),
        expect: [/`vault\.database\.url`/, /LETHE_E2E_UNSET_SECRET/],
      },
    ];
    const runs = await Promise.all(
      cases.map(async (c) => env.cli(['backup', '--config', await env.writeConfig(c.name, c.raw)])),
    );
    for (const [i, c] of cases.entries()) {
      const run = runs[i];
      if (run === undefined) throw new Error('missing run');
      expectExit(run, 2);
      for (const pattern of c.expect) expect(run.stderr, c.name).toMatch(pattern);
      expect(run.stderr, c.name).not.toMatch(/unexpected error|\n\s+at /);
      expect(run.stdout, c.name).toBe('');
    }
    expect(await written()).toEqual({ objects: [], snapshots: 0, audit: auditEntries });
  });

  it('names a table the mapping does not cover, exit 2, nothing written', async () => {
    const client = new pg.Client({ connectionString: env.chat.url });
    await client.connect();
    try {
      await client.query(
        'CREATE TABLE public.extra_notes (id bigint PRIMARY KEY, note text NOT NULL)',
      );
      await client.query("INSERT INTO public.extra_notes VALUES (1, 'not in the mapping')");
      // One after the other: two backups at once would meet each other's job lock.
      const human = await env.cli(['backup', '--config', env.configPath]);
      expectExit(human, 2);
      expect(human.stderr).toMatch(/extra_notes/);
      const json = await env.cli(['backup', '--config', env.configPath, '--json']);
      expectExit(json, 2);
      const error = (jsonOut(json) as { error: { code: string; message: string } }).error;
      expect(error.code).toBe('TABLE_UNMAPPED');
      expect(error.message).toMatch(/extra_notes/);
      expect(await written()).toEqual({ objects: [], snapshots: 0, audit: auditEntries });
    } finally {
      await client.query('DROP TABLE IF EXISTS public.extra_notes');
      await client.end();
    }
  });
});
