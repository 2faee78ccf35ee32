import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: every backup, verify and key operation is in an append-only, hash-chained
 * audit log that `lethe audit verify` checks, and the chain is copied to the bucket so it
 * outlives the vault.
 */

interface ChainReport {
  ok: boolean;
  entries: number;
  findings: { seq: number; problem: string }[];
}

describe('the audit log after init, backup and verify', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let snapshotId: string;

  beforeAll(async () => {
    template = await createChatTemplate('e2e_audit_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e-auditor');
    snapshotId = (await backup(env.rt, { actor: 'e2e-auditor' })).snapshotId;
    const checked = await verify(env.rt, { snapshot: snapshotId, actor: 'e2e-auditor' });
    expect(checked.ok).toBe(true);
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('`lethe audit verify --json` finds an intact chain of every operation', async () => {
    const run = await env.cli(['audit', 'verify', '--config', env.configPath, '--json']);
    expectExit(run, 0);
    const report = jsonOut(run) as ChainReport;
    expect(report.ok).toBe(true);
    expect(report.findings).toEqual([]);
    expect(report.entries).toBeGreaterThanOrEqual(3);
    const actions: string[] = [];
    for await (const entry of (await env.rt.vault()).iterateAudit(1)) {
      actions.push(entry.action);
      expect(entry.actor).toBe('e2e-auditor');
    }
    expect(actions).toHaveLength(report.entries);
    expect(actions).toEqual(['init', 'backup.complete', 'verify.ok']);
  });

  it('the backup copied the chain up to itself into the bucket under audit/', async () => {
    const root = env.storePath ?? '';
    const keys = (await filesUnder(join(root, 'audit'))).map((k) => `audit/${k}`);
    expect(keys.length).toBeGreaterThanOrEqual(2);
    const vaultEntries = new Map<number, { hash: string; action: string }>();
    for await (const entry of (await env.rt.vault()).iterateAudit(1))
      vaultEntries.set(entry.seq, entry);
    const exported: { seq: number; hash: string; action: string; subject: string }[] = [];
    for (const key of keys) {
      exported.push(
        JSON.parse(await readFile(join(root, key), 'utf8')) as (typeof exported)[number],
      );
    }
    expect(exported.map((e) => e.seq)).toEqual(keys.map((_k, i) => i + 1));
    for (const entry of exported) expect(entry.hash).toBe(vaultEntries.get(entry.seq)?.hash);
    const last = exported.at(-1);
    expect(last?.action).toBe('backup.complete');
    expect(last?.subject).toBe(snapshotId);
  });

  it('an entry changed behind lethe’s back breaks the chain (exit 3, naming the entry)', async () => {
    const client = new pg.Client({ connectionString: env.vaultDb.url });
    await client.connect();
    try {
      // The table refuses updates; an attacker with superuser rights turns that off first.
      await client.query('ALTER TABLE lethe.audit_log DISABLE TRIGGER USER');
      await client.query("UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 2");
      await client.query('ALTER TABLE lethe.audit_log ENABLE TRIGGER USER');
    } finally {
      await client.end();
    }
    const run = await env.cli(['audit', 'verify', '--config', env.configPath, '--json']);
    expectExit(run, 3);
    const report = jsonOut(run) as ChainReport;
    expect(report.ok).toBe(false);
    expect(report.findings.map((f) => f.seq)).toContain(2);
  });
});
