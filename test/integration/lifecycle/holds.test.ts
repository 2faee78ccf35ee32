import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { listHolds, parseHoldDate, placeHold, releaseHold } from '../../../src/lifecycle/holds.ts';
import type { AuditEntry, Vault } from '../../../src/vault/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql, rejectsWith } from '../vault/fixture.ts';

async function auditEntries(vault: Vault): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of vault.iterateAudit(1)) out.push(e);
  return out;
}

describe('legal holds', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  const base = { caseId: 'CASE-2026.17', tenant: '7', reason: 'litigation Smith v. Acme', actor: 'legal-ann', allowUnsigned: true };

  beforeAll(async () => {
    db = await createTestDatabase('lc_holds');
    fx = await migratedVault(db.url, 'lethe', 5);
    vault = fx.vault;
    const key = (id: string, tenant: string) => ({
      id,
      kind: 'tenant' as const,
      tenant,
      recipient: `age1t${randomBytes(8).toString('hex')}`,
      wrappedIdentity: new Uint8Array(randomBytes(16)),
    });
    await vault.insertDimensionKeys([key('tenant:7', '7'), key('tenant:8', '8'), key('tenant:gone', 'gone')]);
    await vault.destroyDimensionKeys(['tenant:gone']);
  });
  afterAll(async () => {
    await fx.close();
    await db.drop();
  });

  it('places a hold, lists it, and audits hold.place with its selector', async () => {
    const hold = await placeHold(vault, { ...base, user: '42', from: '2026-03-01', to: '2026-03-31' });
    expect(hold).toMatchObject({
      caseId: 'CASE-2026.17',
      tenant: '7',
      user: '42',
      conversation: null,
      from: new Date('2026-03-01T00:00:00.000Z'),
      // A date-only --to is the whole day.
      to: new Date('2026-03-31T23:59:59.999Z'),
      placedBy: 'legal-ann',
      releasedAt: null,
    });
    const second = await placeHold(vault, { ...base, tenant: '8', conversation: 'c9', from: '2026-01-01T10:00:00+01:00' });
    expect(second.from).toEqual(new Date('2026-01-01T09:00:00Z'));
    expect(second.to).toBeNull();

    const listed = await listHolds(vault);
    expect(listed.map((h) => [h.caseId, h.tenant, h.user, h.conversation])).toEqual([
      ['CASE-2026.17', '7', '42', null],
      ['CASE-2026.17', '8', null, 'c9'],
    ]);
    const entries = (await auditEntries(vault)).filter((e) => e.action === 'hold.place');
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({
      actor: 'legal-ann',
      subject: 'CASE-2026.17',
      details: {
        caseId: 'CASE-2026.17',
        tenant: '7',
        user: '42',
        conversation: null,
        from: '2026-03-01T00:00:00.000Z',
        to: '2026-03-31T23:59:59.999Z',
        reason: 'litigation Smith v. Acme',
        holdIds: [hold.id],
      },
    });
    expectNoCheckedOutClients(fx.pool);
  });

  it.each([
    ['a bad case id', { caseId: '../etc' }, /case id "..\/etc" is not allowed/],
    ['an empty case id', { caseId: ' ' }, /--case ID/],
    ['no tenant', { tenant: '' }, /--tenant T/],
    ['an empty reason', { reason: '  ' }, /--reason TEXT/],
    ['an empty actor', { actor: '' }, /--actor NAME/],
    ['an empty user', { user: '' }, /--user is empty/],
    ['a malformed date', { from: '03/01/2026' }, /--from "03\/01\/2026" is not a date/],
    ['an impossible date', { to: '2026-02-30' }, /--to "2026-02-30" is not a date/],
    ['an instant without a zone', { from: '2026-03-01T10:00' }, /--from .* is not a date/],
    ['from after to', { from: '2026-04-01', to: '2026-03-01' }, /--from 2026-04-01T00:00:00.000Z is after --to/],
    ['a tenant the vault never saw', { tenant: '99' }, /tenant "99" has no backed-up data in this vault/],
    ['an erased tenant', { tenant: 'gone' }, /tenant "gone" was erased/],
  ])('refuses %s with a message naming the fix, storing nothing', async (_what, over, message) => {
    const before = (await listHolds(vault)).length;
    const audit = (await auditEntries(vault)).length;
    const err = await rejectsWith(placeHold(vault, { ...base, ...over }), ErrorCode.USAGE);
    expect(err.message).toMatch(message);
    expect((await listHolds(vault)).length).toBe(before);
    expect((await auditEntries(vault)).length).toBe(audit);
  });

  it('parses hold dates strictly', () => {
    expect(parseHoldDate('2026-03-14', 'from')).toEqual(new Date('2026-03-14T00:00:00Z'));
    expect(parseHoldDate('2026-03-14', 'to')).toEqual(new Date('2026-03-14T23:59:59.999Z'));
    expect(parseHoldDate('2026-03-14T12:30:00Z', 'to')).toEqual(new Date('2026-03-14T12:30:00Z'));
    expect(() => parseHoldDate('yesterday', 'from')).toThrow(/YYYY-MM-DD/);
  });

  it('releases every selector of a case, once, with hold.release; unknown cases are named', async () => {
    const released = await releaseHold(vault, 'CASE-2026.17', { actor: 'legal-bea', allowUnsigned: true }, 'settled');
    expect(released.map((h) => h.tenant)).toEqual(['7', '8']);
    for (const h of released) {
      expect(h.releasedBy).toBe('legal-bea');
      expect(h.releasedAt).toBeInstanceOf(Date);
    }
    expect(await listHolds(vault, { activeOnly: true })).toEqual([]);
    expect((await listHolds(vault)).every((h) => h.releasedBy === 'legal-bea')).toBe(true);
    const entry = (await auditEntries(vault)).filter((e) => e.action === 'hold.release');
    expect(entry).toHaveLength(1);
    expect(entry[0]).toMatchObject({
      actor: 'legal-bea',
      subject: 'CASE-2026.17',
      details: { caseId: 'CASE-2026.17', tenants: ['7', '8'], holdIds: released.map((h) => h.id), reason: 'settled' },
    });

    const again = await rejectsWith(releaseHold(vault, 'CASE-2026.17', { actor: 'legal-bea', allowUnsigned: true }), ErrorCode.REFUSED);
    expect(again.message).toMatch(/case CASE-2026.17 is already released \(by legal-bea/);
    const unknown = await rejectsWith(releaseHold(vault, 'NO-SUCH-CASE', { actor: 'legal-bea', allowUnsigned: true }), ErrorCode.USAGE);
    expect(unknown.message).toMatch(/no legal hold has case id "NO-SUCH-CASE"/);
    await rejectsWith(releaseHold(vault, 'CASE-2026.17', { actor: ' ', allowUnsigned: true }), ErrorCode.USAGE);
    expect((await auditEntries(vault)).filter((e) => e.action === 'hold.release')).toHaveLength(1);
    expectNoCheckedOutClients(fx.pool);
  });

  it('the table refuses what the code refuses (a bypass cannot store a bad hold)', async () => {
    await expect(
      rawSql(db.url, `INSERT INTO lethe.holds (case_id, tenant, reason, placed_by, from_ts, to_ts) VALUES ('C', '7', 'r', 'a', '2026-04-01', '2026-03-01')`),
    ).rejects.toThrow(/holds_range/);
    await expect(rawSql(db.url, `INSERT INTO lethe.holds (case_id, tenant, reason, placed_by) VALUES ('-x', '7', 'r', 'a')`)).rejects.toThrow(/check/);
  });

  it('keeps the audit chain intact', async () => {
    const report = await vault.verifyAuditChain();
    expect(report.ok).toBe(true);
    expect(report.entries).toBe(3);
  });
});
