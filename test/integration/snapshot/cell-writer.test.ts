import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellId, cellKeyId, conversationKeyId, RowFingerprint, userKeyId, type CellRows, type CellTuple } from '../../../src/cells/index.ts';
import { generateKeyPair } from '../../../src/crypto/index.ts';
import { Encapsulator } from '../../../src/keys/index.ts';
import { CellWriter, type CellOutcome, type PreviousCell } from '../../../src/snapshot/cell-writer.ts';
import { PackWriter } from '../../../src/snapshot/pack-writer.ts';
import { createFilesystemStore, type ObjectStore } from '../../../src/storage/index.ts';
import type { Vault } from '../../../src/vault/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { expectNoCheckedOutClients, migratedVault } from '../vault/fixture.ts';

/**
 * The backup's cell writer against a real vault and store, with tiny batches and buffer so
 * that batch boundaries, a large (streamed) cell in the middle of a batch, reuse through
 * the batched previous-copy lookup, key stability and shredded keys all happen.
 */

const DIGEST_KEY = new Uint8Array(32).fill(7);
const BUFFER_BYTES = 64;

const tuple = (author: string, conversation: string | null): CellTuple => ({
  tenant: 't1',
  class: 'messages',
  period: '2026-03',
  author,
  conversation,
});

/** Seven cells of three rows each (one of them large enough to stream), as groupCells yields them. */
const CELLS: readonly { tuple: CellTuple; rows: string[] }[] = [
  { tuple: tuple('u1', 'c1'), rows: ['1\ta\n', '2\tb\n'] },
  { tuple: tuple('u1', 'c2'), rows: ['3\tc\n'] },
  { tuple: tuple('u2', 'c1'), rows: ['4\td\n'] },
  { tuple: tuple('u2', 'c2'), rows: ['5\te\n', '6\tf\n'] },
  { tuple: tuple('u3', 'c1'), rows: Array.from({ length: 20 }, (_, i) => `${10 + i}\t${'x'.repeat(10)}\n`) },
  { tuple: tuple('u3', null), rows: ['40\tg\n'] },
  { tuple: tuple('u4', 'c3'), rows: ['41\th\n'] },
];

async function* rowsOf(rows: readonly string[]): AsyncGenerator<Buffer> {
  for (const row of rows) yield await Promise.resolve(Buffer.from(row, 'utf8'));
}

describe('CellWriter (batched lookups)', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  let dir: string;
  let store: ObjectStore;
  let master: string;

  beforeAll(async () => {
    db = await createTestDatabase('cell_writer');
    fx = await migratedVault(db.url);
    vault = fx.vault;
    dir = await mkdtemp(join(tmpdir(), 'lethe-cell-writer-'));
    store = await createFilesystemStore({ path: dir });
    master = generateKeyPair().recipient;
  });
  afterAll(async () => {
    expectNoCheckedOutClients(fx.pool);
    await fx.close();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  let runs = 0;
  /** One backup run's worth of writing: a fresh encapsulator and pack writer, like runBackup. */
  async function run(previous: ReadonlyMap<string, PreviousCell>): Promise<{ outcomes: CellOutcome[]; created: number; asked: number; encapsulations: number }> {
    runs += 1;
    const snapshotId = `s${runs}`;
    await vault.beginSnapshot({ id: snapshotId, previousId: null, runOwner: 'test', store: store.description });
    const keys = new Encapsulator(vault, master, snapshotId);
    const packs = new PackWriter(store, { targetBytes: 1 << 20 });
    let asked = 0;
    const writer = new CellWriter({
      table: 'messages',
      columns: ['id', 'body'],
      packs,
      keys,
      digestKey: DIGEST_KEY,
      previous: (ids) => {
        asked += 1;
        return Promise.resolve(new Map(ids.flatMap((id) => (previous.has(id) ? [[id, previous.get(id) as PreviousCell]] : []))));
      },
      bufferBytes: BUFFER_BYTES,
      batchCells: 3,
    });
    const outcomes: CellOutcome[] = [];
    for (const cell of CELLS) {
      const rows: CellRows = { tuple: cell.tuple, rows: rowsOf(cell.rows), fingerprint: new RowFingerprint() };
      outcomes.push(...(await writer.add(rows)));
    }
    outcomes.push(...(await writer.flush()));
    await packs.close();
    // What runBackup records with each batch's cells.
    await vault.insertCellKeys(keys.takeTupleFacts());
    const encapsulations = keys.created().length;
    keys.forget();
    return { outcomes, created: keys.dimensionKeysCreated, asked, encapsulations };
  }

  const idOf = (o: CellOutcome): string => (o.kind === 'shredded' ? o.cellId : o.entry.id);
  /** What the vault gives the next run: each cell's copy, with the digest it recorded for a written one. */
  const asPrevious = (outcomes: readonly CellOutcome[]): Map<string, PreviousCell> =>
    new Map(outcomes.flatMap((o) => (o.kind === 'written' ? [[o.entry.id, { ...o.entry, copyId: o.entry.id, fingerprint: o.fingerprint, encapsulation: o.entry.enc, digest: o.digest }]] : [])));

  let first: CellOutcome[] = [];

  it('writes every cell once, in order, under one encapsulation for the tenant and keys that need every dimension', async () => {
    const result = await run(new Map());
    first = result.outcomes;
    expect(first.map(idOf)).toEqual(CELLS.map((c) => cellId('messages', c.tuple)));
    expect(first.map((o) => o.kind)).toEqual(CELLS.map(() => 'written'));
    const large = first[4];
    expect(large?.kind === 'written' && large.entry.rows).toBe(20);
    // period, tenant, users u1..u4, conversations c1..c3: each made once, whatever the cell count.
    expect(result.created).toBe(9);
    expect(result.encapsulations).toBe(1);
    expect(new Set(first.map((o) => o.kind === 'written' && o.entry.enc))).toEqual(new Set(['s1/t1']));
    const withConversationEntry = first[1];
    expect(withConversationEntry?.kind === 'written' && withConversationEntry.entry.dims).toEqual([
      'period:t1/messages/2026-03',
      userKeyId('t1', 'u1'),
      conversationKeyId('t1', 'c2'),
      'tenant:t1',
    ]);
    const stored = await vault.getCellKeys(CELLS.map((c) => cellKeyId(c.tuple)));
    expect(stored.size).toBe(CELLS.length);
    const withConversation = stored.get(cellKeyId(tuple('u1', 'c2')));
    expect(withConversation?.conversation).toBe('c2');
    expect(withConversation?.dimensionIds).toEqual([
      'period:t1/messages/2026-03',
      userKeyId('t1', 'u1'),
      conversationKeyId('t1', 'c2'),
      'tenant:t1',
    ]);
    expect(stored.get(cellKeyId(tuple('u3', null)))?.dimensionIds).not.toContain(conversationKeyId('t1', 'c1'));
  });

  it('references unchanged small cells from the previous snapshot and keeps every key', async () => {
    const second = await run(asPrevious(first));
    expect(second.created).toBe(0);
    // The one cell written anew (the large one streams, never reused) uses this run's encapsulation.
    expect(second.encapsulations).toBe(1);
    // Batches of three, cut early by the large cell: [0,1,2] [3] (large 4) [5,6], and the
    // large cell's own current copy (the one it supersedes).
    expect(second.asked).toBe(4);
    expect(second.outcomes.map((o) => o.kind)).toEqual(['reused', 'reused', 'reused', 'reused', 'written', 'reused', 'reused']);
    for (const [i, o] of second.outcomes.entries()) {
      const before = first[i];
      if (o.kind === 'shredded' || before === undefined || before.kind === 'shredded') throw new Error('unexpected shred');
      expect(o.entry.key).toBe(before.entry.key);
      // A reused cell keeps the encapsulation it was written under.
      expect(o.entry.enc).toBe(o.kind === 'reused' ? before.entry.enc : 's2/t1');
      // The digest goes to the vault only, never into the manifest entry.
      expect(Object.keys(o.entry)).not.toContain('digest');
      if (o.kind === 'written' && before.kind === 'written') expect(o.digest).toBe(before.digest);
      if (o.kind === 'reused') expect([o.entry.pack, o.entry.offset, o.entry.length]).toEqual([before.entry.pack, before.entry.offset, before.entry.length]);
    }
  });

  it('reports the cells of a destroyed dimension key as shredded and writes nothing for them', async () => {
    expect(await vault.destroyDimensionKeys([conversationKeyId('t1', 'c1')])).toEqual([conversationKeyId('t1', 'c1')]);
    const third = await run(asPrevious(first));
    expect(third.created).toBe(0);
    expect(third.encapsulations).toBe(0);
    const kinds = Object.fromEntries(third.outcomes.map((o) => [idOf(o), o.kind]));
    expect(kinds).toEqual(
      Object.fromEntries(
        CELLS.map((c) => [cellId('messages', c.tuple), c.tuple.conversation === 'c1' ? 'shredded' : 'reused']),
      ),
    );
    const large = third.outcomes[4];
    expect(large?.kind === 'shredded' && [large.destroyedKey, large.rows]).toEqual([conversationKeyId('t1', 'c1'), 20]);
  });
});
