import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { isComplete, type RunningSnapshot, type SnapshotCell, type Vault } from '../../../src/vault/index.ts';
import { expectNoCheckedOutClients, migratedVault, rejectsWith } from './fixture.ts';

const KEY_ID = 'acme/messages/2026-03/u1';
/** Cells must name a recorded encapsulation; a hold's needs no snapshot row. */
const ENCAPSULATION = 'enc-fixture';

function cell(
  table: string,
  n: number,
  pack = `pack-${String(n % 7).padStart(2, '0')}`,
): SnapshotCell {
  return {
    id: `${table}/cell-${n}`,
    table,
    tenant: n % 5 === 0 ? null : 'acme',
    class: 'messages',
    period: '2026-03',
    author: n % 3 === 0 ? null : `u${n % 3}`,
    key: KEY_ID,
    encapsulation: ENCAPSULATION,
    pack,
    offset: (n * 7919) % 100_000,
    length: 100 + n,
    sha256: `sha-${n}`,
    rows: n,
    bytesPlain: n * 10,
    reused: n % 2 === 0,
  };
}

const STORE = 'filesystem:/test-store';
/** The running snapshots begun in this file, by id. */
const runs = new Map<string, RunningSnapshot>();

/** Records cells as new copies written by the running snapshot `id`. */
function add(vault: Vault, id: string, cells: readonly SnapshotCell[], superseded: readonly string[] = []): Promise<void> {
  const run = runs.get(id) ?? { id, seq: 1_000_000 + runs.size, store: STORE };
  return vault.recordCopyChanges(run, {
    copies: cells.map(({ reused: _, ...c }) => ({ ...c, segment: `${c.table}/acme/2026-03`, digest: 'd'.repeat(64), fingerprint: 'f'.repeat(64) })),
    superseded,
    fingerprints: [],
    cellKeys: [],
  });
}

/** One table's cells of a snapshot, by cell id (reused: written by an earlier snapshot). */
async function indexOf(vault: Vault, id: string, table: string): Promise<Map<string, SnapshotCell>> {
  const found = new Map<string, SnapshotCell>();
  for await (const c of vault.iterateSnapshotCells(id)) if (c.table === table) found.set(c.id, c);
  return found;
}

async function begin(vault: Vault, run: { id: string; previousId: string | null; runOwner: string }, store = STORE): ReturnType<Vault['beginSnapshot']> {
  const record = await vault.beginSnapshot({ ...run, store });
  runs.set(run.id, { id: run.id, seq: record.seq, store });
  return record;
}

/** The order iterateSnapshotCells promises, written out independently of the SQL. */
function packOrder(a: SnapshotCell, b: SnapshotCell): number {
  const keyA = [a.pack, a.offset, a.table, a.id] as const;
  const keyB = [b.pack, b.offset, b.table, b.id] as const;
  for (let i = 0; i < keyA.length; i++) {
    if (keyA[i] !== keyB[i]) return (keyA[i] ?? '') < (keyB[i] ?? '') ? -1 : 1;
  }
  return 0;
}

describe('vault snapshots', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  beforeAll(async () => {
    db = await createTestDatabase('vault_snapshots');
    fx = await migratedVault(db.url);
    vault = fx.vault;
    await vault.insertCellKeys([
      {
        id: KEY_ID,
        tenant: 'acme',
        class: 'messages',
        period: '2026-03',
        conversation: null,
        author: 'u1',
        dimensionIds: ['period:acme/messages/2026-03', 'tenant:acme'],
      },
    ]);
    await vault.insertEncapsulations([
      { id: ENCAPSULATION, purpose: 'hold', snapshotId: null, tenant: 'acme', kem: 'x25519', ephemeral: Buffer.alloc(32, 9) },
    ]);
  });
  afterEach(() => {
    expectNoCheckedOutClients(fx.pool);
  });
  afterAll(async () => {
    await fx.close();
    await db.drop();
  });

  it('has no latest snapshot before the first backup', async () => {
    const err = await rejectsWith(vault.getSnapshot('latest'), 'SNAPSHOT_NOT_FOUND');
    expect(err.message).toContain('lethe backup');
    expect(await vault.latestCompleteSnapshot()).toBeNull();
  });

  it('runs a snapshot from running to complete', async () => {
    const running = await begin(vault, {
      id: 's1',
      previousId: null,
      runOwner: 'host-a:100',
    });
    expect(running).toMatchObject({
      id: 's1',
      status: 'running',
      previousId: null,
      runOwner: 'host-a:100',
    });
    expect(await vault.listSnapshots()).toEqual([]);
    expect((await vault.listSnapshots({ includeIncomplete: true })).map((s) => s.id)).toEqual([
      's1',
    ]);
    const notYet = await rejectsWith(vault.getSnapshot('s1'), 'SNAPSHOT_NOT_FOUND');
    expect(notYet.message).toMatch(/s1 is running, not complete/);

    const cells = [cell('messages', 1), cell('messages', 2), cell('attachments', 1)];
    await add(vault, 's1', cells);
    const done = await vault.completeSnapshot('s1', {
      manifestKey: 'snapshots/s1.json',
      manifestSha256: 'abc',
      stats: { cells: 3, tables: { messages: 2 } },
    });
    expect(done).toMatchObject({
      id: 's1',
      status: 'complete',
      manifestKey: 'snapshots/s1.json',
      manifestSha256: 'abc',
      stats: { cells: 3, tables: { messages: 2 } },
    });
    expect(done.completedAt.getTime()).toBeGreaterThanOrEqual(done.startedAt.getTime());
    expect(await vault.getSnapshot('latest')).toEqual(done);
    expect(await vault.latestCompleteSnapshot()).toEqual(done);
    expect(isComplete(done)).toBe(true);
    expect(isComplete(running)).toBe(false);
    expect(await vault.getSnapshot('s1')).toEqual(done);

    const again = await rejectsWith(
      vault.completeSnapshot('s1', { manifestKey: 'x', manifestSha256: 'y', stats: {} }),
      'VAULT',
    );
    expect(again.message).toMatch(/s1 is complete, not running/);
    await rejectsWith(add(vault, 's1', [cell('messages', 3)]), 'VAULT');

    const index = await indexOf(vault, 's1', 'messages');
    expect([...index.keys()].sort()).toEqual(['messages/cell-1', 'messages/cell-2']);
    expect(index.get('messages/cell-2')).toEqual({ ...cell('messages', 2), reused: false });
    expect((await indexOf(vault, 's1', 'attachments')).get('attachments/cell-1')).toEqual({ ...cell('attachments', 1), reused: false });
    expect((await indexOf(vault, 's1', 'nope')).size).toBe(0);
  });

  it('abandons runs that died, dropping their cells, and resolves latest past them', async () => {
    await begin(vault, { id: 's2', previousId: 's1', runOwner: 'host-b:200' });
    await add(vault, 's2', [cell('messages', 10), cell('messages', 11)]);
    // A run holds what it wrote and every current copy it does not supersede (s1's two).
    const held = await indexOf(vault, 's2', 'messages');
    expect([...held.values()].filter((c) => !c.reused).map((c) => c.id).sort()).toEqual(['messages/cell-10', 'messages/cell-11']);
    expect(held.size).toBe(4);

    expect(await vault.abandonStaleSnapshots()).toEqual(['s2']);
    expect(await vault.abandonStaleSnapshots()).toEqual([]);
    expect((await vault.findSnapshot('s2'))?.status).toBe('abandoned');
    expect((await indexOf(vault, 's2', 'messages')).size).toBe(0);
    const late = await rejectsWith(
      vault.completeSnapshot('s2', { manifestKey: 'k', manifestSha256: 'h', stats: {} }),
      'VAULT',
    );
    expect(late.message).toMatch(/abandoned/);
    await rejectsWith(add(vault, 's2', [cell('messages', 12)]), 'VAULT');
    expect((await vault.getSnapshot('latest')).id).toBe('s1');

    await begin(vault, { id: 's3', previousId: 's1', runOwner: 'host-a:300' });
    await vault.completeSnapshot('s3', {
      manifestKey: 'snapshots/s3.json',
      manifestSha256: 'def',
      stats: {},
    });
    expect((await vault.getSnapshot('latest')).id).toBe('s3');
    expect((await vault.listSnapshots()).map((s) => s.id)).toEqual(['s3', 's1']);
    expect(
      (await vault.listSnapshots({ includeIncomplete: true })).map((s) => `${s.id}:${s.status}`),
    ).toEqual(['s3:complete', 's2:abandoned', 's1:complete']);
    expect((await vault.listSnapshots({ limit: 1 })).map((s) => s.id)).toEqual(['s3']);
  });

  it('abandons one failed run by id, and only a running one', async () => {
    await begin(vault, { id: 's-failed', previousId: 's3', runOwner: 'host-c:400' });
    await add(vault, 's-failed', [cell('messages', 20)]);
    expect(await vault.abandonSnapshot('s-failed')).toBe(true);
    expect(await vault.abandonSnapshot('s-failed')).toBe(false);
    expect(await vault.abandonSnapshot('s3')).toBe(false);
    expect(await vault.abandonSnapshot('ghost')).toBe(false);
    expect((await vault.findSnapshot('s-failed'))?.status).toBe('abandoned');
    expect((await vault.findSnapshot('s3'))?.status).toBe('complete');
    expect((await indexOf(vault, 's-failed', 'messages')).size).toBe(0);
  });

  it('names an unknown snapshot and points at `lethe snapshots`', async () => {
    const err = await rejectsWith(vault.getSnapshot('2026-01-01T00'), 'SNAPSHOT_NOT_FOUND');
    expect(err.message).toBe(
      'snapshot "2026-01-01T00" not found: run `lethe snapshots` to list them',
    );
    expect(await vault.findSnapshot('2026-01-01T00')).toBeNull();
    await rejectsWith(
      vault.completeSnapshot('nope', { manifestKey: 'k', manifestSha256: 'h', stats: {} }),
      'SNAPSHOT_NOT_FOUND',
    );
    await rejectsWith(add(vault, 'nope', [cell('messages', 1)]), 'SNAPSHOT_NOT_FOUND');
  });

  it('refuses reused, reserved and dangling snapshot ids', async () => {
    await rejectsWith(vault.beginSnapshot({ id: 's1', previousId: null, runOwner: 'x', store: STORE }), 'VAULT');
    await rejectsWith(
      vault.beginSnapshot({ id: 'latest', previousId: null, runOwner: 'x', store: STORE }),
      'VAULT',
    );
    await rejectsWith(
      vault.beginSnapshot({ id: 's9', previousId: 'ghost', runOwner: 'x', store: STORE }),
      'SNAPSHOT_NOT_FOUND',
    );
    await rejectsWith(
      vault.beginSnapshot({ id: 's9', previousId: 's2', runOwner: 'x', store: STORE }),
      'SNAPSHOT_NOT_FOUND',
    );
    expect(await vault.findSnapshot('s9')).toBeNull();
  });

  it('rejects a duplicate cell or an unknown key and keeps none of the batch', async () => {
    await begin(vault, { id: 's-dup', previousId: null, runOwner: 'x' });
    await rejectsWith(
      add(vault, 's-dup', [cell('messages', 1), cell('messages', 1)]),
      'DATABASE',
    );
    await rejectsWith(
      add(vault, 's-dup', [{ ...cell('messages', 2), key: 'no-such-key' }]),
      'DATABASE',
    );
    expect([...(await indexOf(vault, 's-dup', 'messages')).values()].filter((c) => !c.reused)).toEqual([]);
    await vault.abandonStaleSnapshots();
  });

  it('iterates a large snapshot in (pack, offset) order across many pages', async () => {
    const total = 4321;
    const cells = Array.from({ length: total }, (_, n) =>
      cell(n % 2 === 0 ? 'messages' : 'reactions', n),
    );
    // Same pack and offset in two tables: the order must still be total and stable.
    cells.push(
      { ...cell('attachments', 1, 'pack-00'), offset: 0 },
      { ...cell('messages', 99_999, 'pack-00'), offset: 0 },
    );
    await begin(vault, { id: 'big', previousId: null, runOwner: 'x' }, 'filesystem:/another-store');
    await add(vault, 'big', [...cells].reverse());

    const seen: SnapshotCell[] = [];
    for await (const c of vault.iterateSnapshotCells('big', { pageRows: 500 })) seen.push(c);
    expect(seen).toHaveLength(total + 2);
    // All written by `big` itself, so none is reused.
    expect(seen).toEqual([...cells].map((c) => ({ ...c, reused: false })).sort(packOrder));

    const exactPages: SnapshotCell[] = [];
    for await (const c of vault.iterateSnapshotCells('big', { pageRows: total + 2 }))
      exactPages.push(c);
    expect(exactPages).toHaveLength(total + 2);

    let taken = 0;
    for await (const _ of vault.iterateSnapshotCells('big', { pageRows: 100 })) {
      if (++taken === 150) break;
    }
    expect(taken).toBe(150);

    const none: SnapshotCell[] = [];
    for await (const c of vault.iterateSnapshotCells('ghost')) none.push(c);
    expect(none).toEqual([]);
  });

  it('stops iterating when its signal aborts', async () => {
    const controller = new AbortController();
    const run = async (): Promise<number> => {
      let n = 0;
      for await (const _ of vault.iterateSnapshotCells('big', {
        pageRows: 100,
        signal: controller.signal,
      })) {
        if (++n === 100) controller.abort();
      }
      return n;
    };
    await rejectsWith(run(), 'ABORTED');
  });

  it('keeps a copy from the run that wrote it to the first complete run that leaves it out, and prunes what no snapshot needs', async () => {
    const store = 'filesystem:/interval-store';
    const ids = async (id: string): Promise<string[]> => [...(await indexOf(vault, id, 'messages')).keys()].sort();
    const copyIds = async (run: RunningSnapshot, cellIds: string[]): Promise<string[]> => [...(await vault.currentCopies(run, cellIds)).values()].map((c) => c.copyId);
    await begin(vault, { id: 'i1', previousId: null, runOwner: 'x' }, store);
    await add(vault, 'i1', [cell('messages', 31), cell('messages', 32), cell('messages', 33)]);
    await vault.completeSnapshot('i1', { manifestKey: 'snapshots/i1.json.gz', manifestSha256: 'a'.repeat(64), stats: { segments: 0 } });
    // i2 rewrites cell 32 and drops cell 33.
    await begin(vault, { id: 'i2', previousId: 'i1', runOwner: 'x' }, store);
    const i2 = runs.get('i2') as RunningSnapshot;
    const gone = await copyIds(i2, ['messages/cell-32', 'messages/cell-33']);
    expect(gone).toHaveLength(2);
    await add(vault, 'i2', [{ ...cell('messages', 32), sha256: 'new' }], gone);
    // Not yet complete: i1 is untouched, and a failed i2 would leave no trace.
    expect(await ids('i1')).toEqual(['messages/cell-31', 'messages/cell-32', 'messages/cell-33']);
    await vault.completeSnapshot('i2', { manifestKey: 'snapshots/i2.json.gz', manifestSha256: 'b'.repeat(64), stats: { segments: 0 } });
    expect(await ids('i1')).toEqual(['messages/cell-31', 'messages/cell-32', 'messages/cell-33']);
    expect(await ids('i2')).toEqual(['messages/cell-31', 'messages/cell-32']);
    expect((await indexOf(vault, 'i2', 'messages')).get('messages/cell-32')?.sha256).toBe('new');
    expect((await indexOf(vault, 'i1', 'messages')).get('messages/cell-32')?.sha256).toBe('sha-32');
    // An abandoned i3 that superseded cell 31 changes nothing.
    await begin(vault, { id: 'i3', previousId: 'i2', runOwner: 'x' }, store);
    await add(vault, 'i3', [], await copyIds(runs.get('i3') as RunningSnapshot, ['messages/cell-31']));
    expect(await vault.abandonSnapshot('i3')).toBe(true);
    await begin(vault, { id: 'i4', previousId: 'i2', runOwner: 'x' }, store);
    expect((await vault.currentCopies(runs.get('i4') as RunningSnapshot, ['messages/cell-31'])).size).toBe(1);
    await vault.completeSnapshot('i4', { manifestKey: 'snapshots/i4.json.gz', manifestSha256: 'c'.repeat(64), stats: { segments: 0 } });
    expect(await ids('i4')).toEqual(['messages/cell-31', 'messages/cell-32']);
    // Once i1 expires, only i1's copies of 32 and 33 are needed by no live snapshot.
    expect(await vault.expireSnapshot('i1')).toBe(true);
    const before = await vault.pruneTrees();
    expect(before.copies).toBe(2);
    expect(await ids('i1')).toEqual(['messages/cell-31']);
    expect(await ids('i4')).toEqual(['messages/cell-31', 'messages/cell-32']);
    expect((await vault.pruneTrees()).copies).toBe(0);
  });

  it('records verifications and returns the latest', async () => {
    expect(await vault.lastVerification('s1')).toBeNull();
    const first = await vault.recordVerification({
      snapshotId: 's1',
      startedAt: new Date('2026-03-02T00:00:00.000Z'),
      durationMs: 1200,
      ok: false,
      result: { failed: ['cell-1'] },
    });
    const second = await vault.recordVerification({
      snapshotId: 's1',
      startedAt: new Date('2026-03-03T00:00:00.000Z'),
      durationMs: 900,
      ok: true,
      result: { rows: 3, rtoMs: 900 },
    });
    expect(second.id).toBeGreaterThan(first.id);
    expect(await vault.lastVerification('s1')).toEqual({
      id: second.id,
      snapshotId: 's1',
      startedAt: new Date('2026-03-03T00:00:00.000Z'),
      durationMs: 900,
      ok: true,
      result: { rows: 3, rtoMs: 900 },
    });
    expect(await vault.lastVerification('s3')).toBeNull();
    await rejectsWith(
      vault.recordVerification({
        snapshotId: 'ghost',
        startedAt: new Date(),
        durationMs: 1,
        ok: true,
        result: {},
      }),
      'DATABASE',
    );
  });
});
