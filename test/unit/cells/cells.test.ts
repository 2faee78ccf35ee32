import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  cellId,
  cellKeyId,
  conversationKeyId,
  decodeCopyField,
  dimensionKeyIds,
  dimensionKind,
  groupCells,
  type CellTuple,
} from '../../../src/cells/index.ts';
import { encodeSubjects } from '../../../src/mapping/index.ts';

async function* chunked(text: string, size: number): AsyncGenerator<Uint8Array> {
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i += size) yield await Promise.resolve(bytes.subarray(i, i + size));
}

describe('cell ids', () => {
  const tuple: CellTuple = { tenant: 't/1', class: 'messages', period: '2026-03', author: 'u:9', conversation: 'c/7' };

  it('wraps a cell key to period, user, conversation, tenant, innermost first', () => {
    expect(dimensionKeyIds(tuple)).toEqual([
      'period:t%2F1/messages/2026-03',
      'user:t%2F1/u%3A9',
      'conversation:t%2F1/c%2F7',
      'tenant:t%2F1',
    ]);
    expect(dimensionKeyIds({ ...tuple, conversation: null })).toEqual([
      'period:t%2F1/messages/2026-03',
      'user:t%2F1/u%3A9',
      'tenant:t%2F1',
    ]);
    expect(dimensionKeyIds({ ...tuple, period: '-', author: null, conversation: null })).toEqual(['tenant:t%2F1']);
    expect(dimensionKeyIds({ ...tuple, tenant: null, class: 'system' })).toEqual(['system']);
  });

  it('names conversation keys and knows their kind', () => {
    expect(conversationKeyId('t/1', 'c:7')).toBe('conversation:t%2F1/c%3A7');
    expect(dimensionKind(conversationKeyId('t', 'c'))).toBe('conversation');
    expect(dimensionKind('user:t/u')).toBe('user');
    expect(() => dimensionKind('case:t/x')).toThrow(/not a dimension key id/);
  });

  it('puts the conversation in cell and cell key ids', () => {
    expect(cellKeyId(tuple)).toBe('cell:t%2F1/messages/2026-03/u%3A9/c%2F7');
    expect(cellId('messages', tuple)).toBe('messages/t%2F1/2026-03/u%3A9/c%2F7');
    expect(cellKeyId({ ...tuple, conversation: null })).toBe('cell:t%2F1/messages/2026-03/u%3A9/-');
  });

  it('never lets a null author or conversation and one named "-" share a name', () => {
    expect(cellKeyId({ ...tuple, author: null })).not.toBe(cellKeyId({ ...tuple, author: '-' }));
    expect(cellId('m', { ...tuple, author: null })).not.toBe(cellId('m', { ...tuple, author: '-' }));
    expect(cellKeyId({ ...tuple, conversation: null })).not.toBe(cellKeyId({ ...tuple, conversation: '-' }));
    expect(cellId('m', { ...tuple, conversation: null })).not.toBe(cellId('m', { ...tuple, conversation: '-' }));
  });

  it('gives distinct tuples distinct names', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.string(),
        // Authors are canonical subject texts: one id or several (src/mapping/subjects.ts).
        fc.array(fc.string(), { maxLength: 3 }).map(encodeSubjects),
        fc.array(fc.string(), { maxLength: 3 }).map(encodeSubjects),
        fc.option(fc.string()),
        fc.option(fc.string()),
        (t1, t2, a1, a2, c1, c2) => {
          const x: CellTuple = { tenant: t1, class: 'messages', period: '2026-01', author: a1, conversation: c1 };
          const y: CellTuple = { tenant: t2, class: 'messages', period: '2026-01', author: a2, conversation: c2 };
          const same = t1 === t2 && a1 === a2 && c1 === c2;
          expect(cellKeyId(x) === cellKeyId(y)).toBe(same);
          expect(cellId('m', x) === cellId('m', y)).toBe(same);
        },
      ),
    );
  });
});

describe('COPY text', () => {
  it('decodes the escapes COPY writes', () => {
    expect(decodeCopyField('\\N')).toBeNull();
    expect(decodeCopyField('a\\tb\\nc\\\\d')).toBe('a\tb\nc\\d');
    expect(decodeCopyField('\\101\\x42')).toBe('AB');
    expect(decodeCopyField('中文 😀')).toBe('中文 😀');
  });
});

describe('groupCells', () => {
  // Each row: the four key fields, the row's hash (32 hex digits), then the row itself.
  const hash = (n: number): string => `${'0'.repeat(31)}${n}`;
  const copy = [
    `t1\t2026-01\tu1\tc1\t${hash(1)}\t1\thello\n`,
    `t1\t2026-01\tu1\tc2\t${hash(2)}\t2\tworld\n`,
    `t1\t2026-02\tu1\tc1\t${hash(3)}\t3\tx\\ty\n`,
    `t1\t2026-02\tu1\tc1\t${'f'.repeat(32)}\t6\tz\n`,
    `t1\t2026-02\t\\N\t\\N\t${hash(4)}\t4\t\n`,
    `t2\t2026-01\tu1\tc9\t${hash(5)}\t5\t中文\n`,
  ].join('');

  it('splits a sorted COPY stream into cells, whatever the chunking', async () => {
    for (const size of [1, 3, 7, 64, 4096]) {
      const cells: { tuple: CellTuple; rows: string[] }[] = [];
      const fingerprints: string[] = [];
      for await (const cell of groupCells(chunked(copy, size), 'messages')) {
        const rows: string[] = [];
        for await (const row of cell.rows) rows.push(row.toString('utf8'));
        cells.push({ tuple: cell.tuple, rows });
        fingerprints.push(cell.fingerprint.text());
      }
      // Row count, then the exact sums of the two signed 64-bit halves of the rows' hashes
      // (ff…ff is -1 in each half).
      expect(fingerprints).toEqual(['1:0:1', '1:0:2', '2:-1:2', '1:0:4', '1:0:5']);
      expect(cells).toEqual([
        { tuple: { tenant: 't1', class: 'messages', period: '2026-01', author: 'u1', conversation: 'c1' }, rows: ['1\thello\n'] },
        { tuple: { tenant: 't1', class: 'messages', period: '2026-01', author: 'u1', conversation: 'c2' }, rows: ['2\tworld\n'] },
        { tuple: { tenant: 't1', class: 'messages', period: '2026-02', author: 'u1', conversation: 'c1' }, rows: ['3\tx\\ty\n', '6\tz\n'] },
        { tuple: { tenant: 't1', class: 'messages', period: '2026-02', author: null, conversation: null }, rows: ['4\t\n'] },
        { tuple: { tenant: 't2', class: 'messages', period: '2026-01', author: 'u1', conversation: 'c9' }, rows: ['5\t中文\n'] },
      ]);
    }
  });

  it('skips the rest of a cell its consumer did not read', async () => {
    const seen: string[] = [];
    for await (const cell of groupCells(chunked(copy, 5), 'messages')) {
      for await (const row of cell.rows) {
        seen.push(row.toString('utf8'));
        break;
      }
    }
    expect(seen).toEqual(['1\thello\n', '2\tworld\n', '3\tx\\ty\n', '4\t\n', '5\t中文\n']);
  });

  it('refuses a stream cut in the middle of a row', async () => {
    const consume = async (): Promise<void> => {
      for await (const cell of groupCells(chunked(`t1\t2026-01\tu1\tc1\t${'0'.repeat(32)}\t1\thel`, 4), 'messages')) {
        for await (const _row of cell.rows) {
          /* drain */
        }
      }
    };
    await expect(consume()).rejects.toThrow(/middle of a row/);
  });
});
