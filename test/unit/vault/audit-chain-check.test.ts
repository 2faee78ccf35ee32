import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AuditChainChecker,
  GENESIS_HASH,
  auditEntryHash,
  type AuditAnchor,
  type AuditChainReport,
  type AuditEntry,
} from '../../../src/vault/index.ts';

function chain(n: number): AuditEntry[] {
  const out: AuditEntry[] = [];
  let prevHash = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const unhashed = {
      seq,
      at: new Date(Date.UTC(2026, 2, 1, 12, 0, seq)),
      actor: 'test',
      action: 'backup.complete',
      subject: `snap-${seq}`,
      details: { cells: seq * 10 },
      prevHash,
    };
    const entry = { ...unhashed, hash: auditEntryHash(unhashed) };
    out.push(entry);
    prevHash = entry.hash;
  }
  return out;
}

function check(
  entries: readonly AuditEntry[],
  anchors: readonly AuditAnchor[] = [],
): AuditChainReport {
  const checker = new AuditChainChecker(anchors);
  for (const e of entries) checker.add(e);
  return checker.finish();
}

function at<T>(items: readonly T[], i: number): T {
  const item = items[i];
  if (item === undefined) throw new Error(`no item ${i}`);
  return item;
}

describe('auditEntryHash', () => {
  it('is SHA-256 of the sorted-key JSON of the entry fields', () => {
    const entry = {
      seq: 1,
      at: new Date('2026-03-01T12:00:00.000Z'),
      actor: 'test',
      action: 'backup.complete',
      subject: 'snap-1',
      details: { b: [true, null], a: 1 },
      prevHash: GENESIS_HASH,
    };
    const expected =
      '{"action":"backup.complete","actor":"test","at":"2026-03-01T12:00:00.000Z",' +
      '"details":{"a":1,"b":[true,null]},"prevHash":"' +
      GENESIS_HASH +
      '","seq":1,"subject":"snap-1"}';
    expect(auditEntryHash(entry)).toBe(createHash('sha256').update(expected).digest('hex'));
    expect(auditEntryHash({ ...entry, subject: 'snap-2' })).not.toBe(auditEntryHash(entry));
  });
});

describe('AuditChainChecker', () => {
  it('passes an intact chain and reports its head', () => {
    const entries = chain(20);
    expect(check(entries)).toEqual({
      ok: true,
      entries: 20,
      findings: [],
      head: { seq: 20, hash: at(entries, 19).hash },
    });
    expect(check([])).toEqual({ ok: true, entries: 0, findings: [], head: null });
  });

  it('reports a modified entry once, at its own seq', () => {
    const entries = chain(10);
    entries[4] = { ...at(entries, 4), details: { cells: 1 } };
    expect(check(entries).findings).toEqual([
      { seq: 5, problem: expect.stringMatching(/modified/) as string },
    ]);
  });

  it('reports a modified and re-hashed entry at the next link', () => {
    const entries = chain(10);
    const forged = { ...at(entries, 4), details: { cells: 1 } };
    entries[4] = { ...forged, hash: auditEntryHash(forged) };
    expect(check(entries).findings).toEqual([
      { seq: 6, problem: expect.stringMatching(/prev_hash/) as string },
    ]);
  });

  it('reports deleted entries as a gap naming the first missing seq', () => {
    const entries = chain(10).filter((e) => e.seq !== 4 && e.seq !== 5);
    expect(check(entries).findings).toEqual([
      { seq: 4, problem: expect.stringMatching(/entries 4\.\.5 are missing/) as string },
    ]);
    expect(check(chain(3).slice(1)).findings).toEqual([
      { seq: 1, problem: expect.stringMatching(/entry 1 is missing/) as string },
    ]);
  });

  it('reports swapped hashes at both entries and both following links', () => {
    const entries = chain(10);
    const h3 = at(entries, 2).hash;
    entries[2] = { ...at(entries, 2), hash: at(entries, 6).hash };
    entries[6] = { ...at(entries, 6), hash: h3 };
    expect(check(entries).findings.map((f) => f.seq)).toEqual([3, 4, 7, 8]);
  });

  it('reports reordered entries (contents of two seqs exchanged)', () => {
    const entries = chain(6);
    const [a, b] = [at(entries, 1), at(entries, 3)];
    entries[1] = { ...b, seq: 2 };
    entries[3] = { ...a, seq: 4 };
    const seqs = check(entries).findings.map((f) => f.seq);
    expect(seqs).toEqual([2, 2, 3, 4, 4, 5]);
  });

  it('reports every break in one pass', () => {
    const entries = chain(50);
    entries[9] = { ...at(entries, 9), actor: 'mallory' };
    const h30 = at(entries, 29).hash;
    entries[29] = { ...at(entries, 29), hash: at(entries, 39).hash };
    entries[39] = { ...at(entries, 39), hash: h30 };
    const tampered = entries.filter((e) => e.seq !== 20);
    const report = check(tampered);
    expect(report.ok).toBe(false);
    expect(report.entries).toBe(49);
    expect(report.findings.map((f) => f.seq)).toEqual([10, 20, 30, 31, 40, 41]);
  });

  it('uses anchors to catch a truncated or rewritten chain', () => {
    const entries = chain(10);
    const anchor = { seq: 10, hash: at(entries, 9).hash };
    expect(check(entries, [anchor]).ok).toBe(true);
    expect(check(entries.slice(0, 8), [anchor]).findings).toEqual([
      { seq: 10, problem: expect.stringMatching(/truncated/) as string },
    ]);
    const rewritten = chain(10).map((e) => (e.seq === 10 ? { ...e, hash: 'f'.repeat(64) } : e));
    expect(check(rewritten, [anchor]).findings.map((f) => f.problem)).toEqual([
      expect.stringMatching(/modified/),
      expect.stringMatching(/anchored hash/),
    ]);
  });
});
