import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { GENESIS_HASH, Vault, auditEntryHash, type AuditEntry } from '../../../src/vault/index.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql } from './fixture.ts';

describe('vault audit log', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  const cleanups: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    db = await createTestDatabase('vault_audit');
  });
  afterEach(async () => {
    for (const close of cleanups.splice(0)) await close();
  });
  afterAll(async () => {
    await db.drop();
  });

  /** A vault in its own schema holding a chain of `n` entries appended concurrently. */
  async function vaultWithChain(schema: string, n: number): Promise<Vault> {
    const a = await migratedVault(db.url, schema);
    const b = await migratedVault(db.url, schema);
    cleanups.push(a.close, b.close);
    // Two pools: appends race across connections as they would across processes.
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        (i % 2 === 0 ? a.vault : b.vault).appendAudit({
          actor: `worker-${i % 2}`,
          action: 'backup.complete',
          subject: `snap-${i}`,
          details: {
            i,
            nested: { z: [1, 'two', null], a: true },
            when: new Date(Date.UTC(2026, 2, 1)),
          },
        }),
      ),
    );
    expectNoCheckedOutClients(a.pool);
    expectNoCheckedOutClients(b.pool);
    return a.vault;
  }

  async function tamper(schema: string, sql: string): Promise<void> {
    // An attacker with owner rights can switch the append-only trigger off; the chain must still tell.
    await rawSql(db.url, `ALTER TABLE ${schema}.audit_log DISABLE TRIGGER USER`);
    await rawSql(db.url, sql);
    await rawSql(db.url, `ALTER TABLE ${schema}.audit_log ENABLE TRIGGER USER`);
  }

  async function all(vault: Vault, fromSeq = 1): Promise<AuditEntry[]> {
    const out: AuditEntry[] = [];
    for await (const e of vault.iterateAudit(fromSeq, { pageRows: 7 })) out.push(e);
    return out;
  }

  it('verifies an empty log', async () => {
    const { vault, close } = await migratedVault(db.url, 'empty');
    cleanups.push(close);
    expect(await vault.verifyAuditChain()).toEqual({
      ok: true,
      entries: 0,
      findings: [],
      head: null,
    });
  });

  it('chains 50 concurrent appends without a fork', async () => {
    const vault = await vaultWithChain('intact', 50);
    const entries = await all(vault);
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(entries[0]?.prevHash).toBe(GENESIS_HASH);
    for (let i = 1; i < entries.length; i++) {
      expect(entries[i]?.prevHash).toBe(entries[i - 1]?.hash);
      expect(entries[i]?.at.getTime()).toBeGreaterThanOrEqual(
        entries[i - 1]?.at.getTime() ?? Infinity,
      );
    }
    expect(new Set(entries.map((e) => e.subject)).size).toBe(50);
    const report = await vault.verifyAuditChain();
    expect(report).toEqual({
      ok: true,
      entries: 50,
      findings: [],
      head: { seq: 50, hash: entries[49]?.hash },
    });
    expect((await all(vault, 45)).map((e) => e.seq)).toEqual([45, 46, 47, 48, 49, 50]);
  });

  it('returns the entry as stored, with details normalised to JSON', async () => {
    const { vault, close } = await migratedVault(db.url, 'roundtrip');
    cleanups.push(close);
    const entry = await vault.appendAudit({
      actor: 'dpo@example.com',
      action: 'erase.approve',
      subject: 'req-7',
      details: {
        b: undefined,
        a: new Date('2026-03-01T00:00:00.000Z'),
        big: 2 ** 53 - 1,
        tiny: 1e-7,
        uni: 'é\u{1f600}',
      },
    });
    expect(entry.details).toEqual({
      a: '2026-03-01T00:00:00.000Z',
      big: 2 ** 53 - 1,
      tiny: 1e-7,
      uni: 'é\u{1f600}',
    });
    const [stored] = await all(vault);
    expect(stored).toEqual(entry);
    expect(auditEntryHash(stored ?? entry)).toBe(entry.hash);
    // `at` is cut to milliseconds in the database too, so the stored value hashes the same.
    const { rows } = await rawSql(
      db.url,
      'SELECT (extract(microseconds FROM at)::bigint % 1000)::int AS sub_ms FROM roundtrip.audit_log',
    );
    expect(rows).toEqual([{ sub_ms: 0 }]);
  });

  it('finds a modified entry at its seq', async () => {
    const vault = await vaultWithChain('modified', 50);
    await tamper(
      'modified',
      `UPDATE modified.audit_log SET details = details || '{"i": 999}' WHERE seq = 17`,
    );
    const report = await vault.verifyAuditChain();
    expect(report.ok).toBe(false);
    expect(report.entries).toBe(50);
    expect(report.findings).toEqual([
      { seq: 17, problem: expect.stringMatching(/modified/) as string },
    ]);
  });

  it('finds a deleted entry as a gap at its seq', async () => {
    const vault = await vaultWithChain('deleted', 50);
    await tamper('deleted', 'DELETE FROM deleted.audit_log WHERE seq = 25');
    const report = await vault.verifyAuditChain();
    expect(report.entries).toBe(49);
    expect(report.findings).toEqual([
      { seq: 25, problem: expect.stringMatching(/entry 25 is missing/) as string },
    ]);
  });

  it('finds swapped hashes at both entries and the links after them', async () => {
    const vault = await vaultWithChain('swapped', 50);
    await tamper(
      'swapped',
      `UPDATE swapped.audit_log AS t SET hash = o.hash
         FROM swapped.audit_log AS o
        WHERE (t.seq, o.seq) IN ((30, 40), (40, 30))`,
    );
    const report = await vault.verifyAuditChain();
    expect(report.findings.map((f) => f.seq)).toEqual([30, 31, 40, 41]);
    expect(report.findings.map((f) => f.problem)).toEqual([
      expect.stringMatching(/modified/),
      expect.stringMatching(/prev_hash does not match the hash of entry 30/),
      expect.stringMatching(/modified/),
      expect.stringMatching(/prev_hash does not match the hash of entry 40/),
    ]);
  });

  it('reports every kind of tampering in one walk', async () => {
    const vault = await vaultWithChain('everything', 50);
    await tamper('everything', `UPDATE everything.audit_log SET actor = 'mallory' WHERE seq = 10`);
    await tamper('everything', 'DELETE FROM everything.audit_log WHERE seq = 20');
    await tamper(
      'everything',
      `UPDATE everything.audit_log AS t SET hash = o.hash FROM everything.audit_log AS o
        WHERE (t.seq, o.seq) IN ((30, 40), (40, 30))`,
    );
    const report = await vault.verifyAuditChain();
    expect(report.ok).toBe(false);
    expect(report.findings.map((f) => f.seq)).toEqual([10, 20, 30, 31, 40, 41]);
  });

  it('catches a truncated tail only with an anchor from outside the vault', async () => {
    const vault = await vaultWithChain('truncated', 10);
    const head = (await vault.verifyAuditChain()).head;
    expect(head?.seq).toBe(10);
    await tamper('truncated', 'DELETE FROM truncated.audit_log WHERE seq >= 9');
    expect((await vault.verifyAuditChain()).ok).toBe(true);
    const anchored = await vault.verifyAuditChain({ anchors: head === null ? [] : [head] });
    expect(anchored.findings).toEqual([
      { seq: 10, problem: expect.stringMatching(/truncated/) as string },
    ]);
  });

  it('remembers how far the log was exported, never moving backwards', async () => {
    const { vault, close } = await migratedVault(db.url, 'exported');
    cleanups.push(close);
    expect(await vault.auditExportedSeq()).toBe(0);
    await vault.setAuditExportedSeq(40);
    await vault.setAuditExportedSeq(12);
    expect(await vault.auditExportedSeq()).toBe(40);
    await vault.setAuditExportedSeq(41);
    expect(await vault.auditExportedSeq()).toBe(41);
    await expect(vault.setAuditExportedSeq(-1)).rejects.toThrow(/not a non-negative integer/);
  });

  it('continues the chain after the entries already there', async () => {
    const vault = await vaultWithChain('continued', 3);
    const next = await vault.appendAudit({ actor: 'test', action: 'verify.ok', subject: 's1' });
    const entries = await all(vault);
    expect(next.seq).toBe(4);
    expect(next.prevHash).toBe(entries[2]?.hash);
    expect(next.details).toEqual({});
    expect((await vault.verifyAuditChain()).ok).toBe(true);
  });
});
