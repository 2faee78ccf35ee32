import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { isComplete, type SnapshotCell, type Vault } from '../../../src/vault/index.ts';
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
    id: `cell-${n}`,
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
    const running = await vault.beginSnapshot({
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
    await vault.addSnapshotCells('s1', cells);
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
    await rejectsWith(vault.addSnapshotCells('s1', [cell('messages', 3)]), 'VAULT');

    const index = await vault.cellIndexForTable('s1', 'messages');
    expect([...index.keys()].sort()).toEqual(['cell-1', 'cell-2']);
    expect(index.get('cell-2')).toEqual(cell('messages', 2));
    expect((await vault.cellIndexForTable('s1', 'attachments')).get('cell-1')).toEqual(
      cell('attachments', 1),
    );
    expect((await vault.cellIndexForTable('s1', 'nope')).size).toBe(0);
  });

  it('abandons runs that died, dropping their cells, and resolves latest past them', async () => {
    await vault.beginSnapshot({ id: 's2', previousId: 's1', runOwner: 'host-b:200' });
    await vault.addSnapshotCells('s2', [cell('messages', 10), cell('messages', 11)]);
    expect((await vault.cellIndexForTable('s2', 'messages')).size).toBe(2);

    expect(await vault.abandonStaleSnapshots()).toEqual(['s2']);
    expect(await vault.abandonStaleSnapshots()).toEqual([]);
    expect((await vault.findSnapshot('s2'))?.status).toBe('abandoned');
    expect((await vault.cellIndexForTable('s2', 'messages')).size).toBe(0);
    const late = await rejectsWith(
      vault.completeSnapshot('s2', { manifestKey: 'k', manifestSha256: 'h', stats: {} }),
      'VAULT',
    );
    expect(late.message).toMatch(/abandoned/);
    await rejectsWith(vault.addSnapshotCells('s2', [cell('messages', 12)]), 'VAULT');
    expect((await vault.getSnapshot('latest')).id).toBe('s1');

    await vault.beginSnapshot({ id: 's3', previousId: 's1', runOwner: 'host-a:300' });
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
    await vault.beginSnapshot({ id: 's-failed', previousId: 's3', runOwner: 'host-c:400' });
    await vault.addSnapshotCells('s-failed', [cell('messages', 20)]);
    expect(await vault.abandonSnapshot('s-failed')).toBe(true);
    expect(await vault.abandonSnapshot('s-failed')).toBe(false);
    expect(await vault.abandonSnapshot('s3')).toBe(false);
    expect(await vault.abandonSnapshot('ghost')).toBe(false);
    expect((await vault.findSnapshot('s-failed'))?.status).toBe('abandoned');
    expect((await vault.findSnapshot('s3'))?.status).toBe('complete');
    expect((await vault.cellIndexForTable('s-failed', 'messages')).size).toBe(0);
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
    await rejectsWith(vault.addSnapshotCells('nope', [cell('messages', 1)]), 'SNAPSHOT_NOT_FOUND');
  });

  it('refuses reused, reserved and dangling snapshot ids', async () => {
    await rejectsWith(vault.beginSnapshot({ id: 's1', previousId: null, runOwner: 'x' }), 'VAULT');
    await rejectsWith(
      vault.beginSnapshot({ id: 'latest', previousId: null, runOwner: 'x' }),
      'VAULT',
    );
    await rejectsWith(
      vault.beginSnapshot({ id: 's9', previousId: 'ghost', runOwner: 'x' }),
      'SNAPSHOT_NOT_FOUND',
    );
    await rejectsWith(
      vault.beginSnapshot({ id: 's9', previousId: 's2', runOwner: 'x' }),
      'SNAPSHOT_NOT_FOUND',
    );
    expect(await vault.findSnapshot('s9')).toBeNull();
  });

  it('rejects a duplicate cell or an unknown key and keeps none of the batch', async () => {
    await vault.beginSnapshot({ id: 's-dup', previousId: null, runOwner: 'x' });
    await rejectsWith(
      vault.addSnapshotCells('s-dup', [cell('messages', 1), cell('messages', 1)]),
      'DATABASE',
    );
    await rejectsWith(
      vault.addSnapshotCells('s-dup', [{ ...cell('messages', 2), key: 'no-such-key' }]),
      'DATABASE',
    );
    expect((await vault.cellIndexForTable('s-dup', 'messages')).size).toBe(0);
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
    await vault.beginSnapshot({ id: 'big', previousId: null, runOwner: 'x' });
    await vault.addSnapshotCells('big', [...cells].reverse());

    const seen: SnapshotCell[] = [];
    for await (const c of vault.iterateSnapshotCells('big', { pageRows: 500 })) seen.push(c);
    expect(seen).toHaveLength(total + 2);
    expect(seen).toEqual([...cells].sort(packOrder));

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
