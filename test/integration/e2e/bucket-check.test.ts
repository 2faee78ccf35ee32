import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditObjectKey, exportAudit } from '../../../src/audit/index.ts';
import { parseConfig } from '../../../src/config/index.ts';
import { backup, initialize, lifecycleApply, restore, verify } from '../../../src/jobs/tasks.ts';
import {
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  queryValue,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate } from './tiny-chat-store.ts';

/**
 * `lethe audit verify` checks the bucket's copies against the vault (audit entries,
 * tombstones, certificates, objects the vault has no record of), and `lethe verify` checks
 * the stored bytes of shredded cells too: the gaps the mutation sweep (test/sweep/
 * mutation.test.ts) found. Each case damages one object, checks, and puts it back.
 */
describe('bucket damage that only the bucket check and shredded-cell check see', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let store: string;
  /** The first snapshot: it lists the cells lifecycle later shreds (later backups leave them out). */
  let first: string;

  const auditVerify = (...extra: string[]): ReturnType<LetheEnv['cli']> =>
    env.cli(['audit', 'verify', '--config', env.configPath, '--json', ...extra]);
  /** Runs `fn` on `key`'s bytes, checks with `check`, then restores the object as it was. */
  const damaged = async (key: string, change: (bytes: Buffer) => Buffer | null, check: () => Promise<void>): Promise<void> => {
    const path = join(store, key);
    const before = await readFile(path);
    const after = change(Buffer.from(before));
    if (after === null) await rm(path);
    else await writeFile(path, after);
    try {
      await check();
    } finally {
      await writeFile(path, before);
    }
  };
  const one = async (prefix: string): Promise<string> => {
    const key = (await filesUnder(join(store, prefix))).at(0);
    if (key === undefined) throw new Error(`no object under ${prefix}`);
    return `${prefix}/${key}`;
  };

  beforeAll(async () => {
    template = await createTinyChatTemplate('bucket_check_tpl');
    env = await createLetheEnv({ template: template.name, config: { retention: { classes: { messages: '365d' } } } });
    store = env.storePath ?? '';
    await initialize(env.rt, 'e2e');
    first = (await backup(env.rt, { actor: 'e2e' })).snapshotId;
    // Typed names where this lethe knows signed approvals (approvals.allowUnsigned).
    const typed = { ...env.raw, approvals: { allowUnsigned: true } };
    let config = env.configPath;
    try {
      parseConfig(typed, env.dir);
      config = await env.writeConfig('erase.yaml', typed);
    } catch {
      // this lethe takes typed names as they are
    }
    const req = await env.cli(['erase', 'request', '--config', config, '--tenant', '4', '--user', '31', '--reason', 'test', '--actor', 'alice', '--json']);
    expectExit(req, 0);
    expectExit(await env.cli(['erase', 'approve', (jsonOut(req) as { id: string }).id, '--config', config, '--actor', 'bob', '--json']), 0);
    // Shreds the 2026 message months (tombstones), then exports the audit chain (backup does).
    await lifecycleApply(env.rt, { actor: 'e2e', now: () => new Date('2027-05-15T00:00:00Z') });
    await backup(env.rt, { actor: 'e2e' });
  }, 180_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('passes an untouched bucket', async () => {
    const out = await auditVerify();
    expectExit(out, 0);
    const report = jsonOut(out) as { ok: boolean; bucket: { objects: number; findings: unknown[]; unrecorded: unknown[] } };
    expect(report.bucket.findings).toEqual([]);
    expect(report.bucket.unrecorded).toEqual([]);
    expect(report.bucket.objects).toBeGreaterThan(10);
  });

  it('fails on an altered audit entry, naming it; --vault-only checks the vault alone', async () => {
    const key = await one('audit');
    await damaged(key, (b) => Buffer.from(b.toString('utf8').replace('"actor":"e2e"', '"actor":"eve"')), async () => {
      const out = await auditVerify();
      expectExit(out, 3);
      expect(out.stdout).toContain(key);
      expectExit(await auditVerify('--vault-only'), 0);
    });
  });

  it('fails on a deleted certificate and on a deleted tombstone', async () => {
    for (const prefix of ['certificates', 'destructions']) {
      const key = await one(prefix);
      await damaged(key, () => null, async () => {
        const out = await auditVerify();
        expectExit(out, 3);
        expect(out.stdout).toMatch(prefix === 'certificates' ? key : /has no valid tombstone/);
      });
    }
  });

  it('passes entries an interrupted export wrote past its mark, and fails on a deleted exported one', async () => {
    const vault = await env.rt.vault();
    await verify(env.rt, { snapshot: first, actor: 'e2e' }); // appends to the vault only
    const mark = await vault.auditExportedSeq();
    expect(await exportAudit(vault, await env.rt.store(), await env.rt.signer('lifecycle'))).toBeGreaterThan(0);
    await vault.setAuditExportedSeq(mark); // as if killed before the mark moved
    expectExit(await auditVerify(), 0);
    const key = auditObjectKey(mark);
    await damaged(key, () => null, async () => {
      const out = await auditVerify();
      expectExit(out, 3);
      expect(out.stdout).toContain(`audit entry ${mark} was exported but is missing`);
    });
  });

  it('warns of an object the vault has no record of, without failing', async () => {
    const key = 'packs/ab/ab000000000000000000000000000000';
    await mkdir(join(store, 'packs', 'ab'), { recursive: true });
    await writeFile(join(store, key), 'planted');
    try {
      const out = await env.cli(['audit', 'verify', '--config', env.configPath]);
      expectExit(out, 0);
      expect(out.stderr).toContain(`${key}: the vault has no record of lethe writing this object`);
    } finally {
      await rm(join(store, key));
    }
  });

  it('verify reports a flipped bit in a shredded cell, which a restore passes over', async () => {
    const cell = await queryValue<{ pack: string; pack_offset: string; cell_id: string }>(
      env.vaultDb.url,
      `SELECT json_build_object('pack', c.pack, 'pack_offset', c.pack_offset, 'cell_id', c.cell_id) AS v
         FROM lethe.cell_copies c JOIN lethe.cell_keys k ON k.id = c.key_id
        WHERE c.from_seq = (SELECT min(seq) FROM lethe.snapshots) AND c.table_name = 'messages' AND c.period LIKE '2026-%'
        ORDER BY c.cell_id LIMIT 1`,
    );
    await damaged(cell.pack, (b) => {
      const at = Number(cell.pack_offset) + 3;
      b[at] = (b[at] ?? 0) ^ 0x10;
      return b;
    }, async () => {
      const result = await verify(env.rt, { snapshot: first, actor: 'e2e' });
      expect(result.ok).toBe(false);
      expect(result.findings).toContainEqual(expect.objectContaining({ subject: `cell ${cell.cell_id}`, code: 'SHREDDED_CELL_DAMAGED' }));
      const target = await env.database('bc_restore');
      const restored = await restore(env.rt, { snapshot: first, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
      expect(restored.cellsShredded).toBeGreaterThan(0);
    });
    expect((await verify(env.rt, { snapshot: first, actor: 'e2e' })).ok).toBe(true);
  });
});
