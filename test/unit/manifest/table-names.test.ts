import { describe, expect, it } from 'vitest';
import { ManifestWriter, TotalsV4Schema, type SegmentEntry, type SnapshotHeader } from '../../../src/manifest/index.ts';

// Found by the fuzz sweep (test/sweep/fuzz.test.ts): a table called `constructor` made the
// writer add its rows to Object.prototype.constructor, so the totals held a string and no
// reader accepted the manifest. Table names are SQL identifiers, and these are valid ones.

const header: SnapshotHeader = {
  id: 's1',
  createdAt: '2026-12-01T00:00:00.000Z',
  previous: null,
  source: { databaseTime: '', transactionSnapshot: '', serverVersion: '' },
  granularity: 'month',
  masterRecipient: 'age1',
  tables: [],
};

function segment(table: string, rows: number): SegmentEntry {
  return {
    id: `${table}/-/p`, table, tenant: null, period: 'p', key: `segments/00/${'0'.repeat(32)}.json.gz`,
    sha256: 'a'.repeat(64), size: 1, cells: 1, rows, bytesPlain: 0, shredded: 0, snapshot: 's1',
  };
}

describe('manifest totals', () => {
  it('count rows of tables named like Object.prototype members', async () => {
    const writer = new ManifestWriter(header, {});
    writer.stream.resume();
    for (const [table, rows] of [['constructor', 2], ['constructor', 1], ['tostring', 4], ['toString', 5], ['__proto__', 6]] as const) {
      await writer.segment(segment(table, rows));
    }
    const { totals } = writer.finish([], { bytesStored: 0, cellsWritten: 0, segmentsWritten: 0, fullRead: true }, new Date(0), () => ({ keyId: 'k', value: 'v' }));
    expect(Object.entries(totals.rowsByTable)).toEqual([['constructor', 3], ['tostring', 4], ['toString', 5], ['__proto__', 6]]);
    expect(TotalsV4Schema.safeParse(JSON.parse(JSON.stringify(totals))).success).toBe(true);
  });
});
