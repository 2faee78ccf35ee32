import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Signer } from '../../../src/keys/index.ts';
import { registeredSigner } from '../../helpers/signing.ts';
import { ErrorCode } from '../../../src/errors/index.ts';
import { OUTSIDE_LETHE, verifyCertificate, type DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import { approveErasure, executeApprovedRequest, requestErasure, type EraseContext } from '../../../src/lifecycle/erase.ts';
import { placeHold, releaseHold } from '../../../src/lifecycle/holds.ts';
import { createFilesystemStore, type ObjectStore } from '../../../src/storage/index.ts';
import type { AuditEntry, CellKey, SnapshotCell, Vault } from '../../../src/vault/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql, rejectsWith } from '../vault/fixture.ts';

const NOW = new Date('2026-11-28T12:00:00.000Z');
const MAR = 'period:t1/messages/2026-03';
const APR = 'period:t1/messages/2026-04';
/** The encapsulation every fixture cell names (a hold's: it needs no snapshot row). */
const ENCAPSULATION = 'enc-fixture';

function cellKey(id: string, author: string, period: string, dims: string[], conversation: string | null = null): CellKey {
  return {
    id,
    tenant: 't1',
    class: 'messages',
    period,
    author,
    conversation,
    dimensionIds: dims,
  };
}

function cell(table: string, key: CellKey, offset: number): SnapshotCell {
  return {
    id: `${table}/${key.id}`,
    table,
    tenant: key.tenant,
    class: key.class,
    period: key.period,
    author: key.author,
    key: key.id,
    encapsulation: ENCAPSULATION,
    pack: 'pack-1',
    offset,
    length: 100,
    sha256: '0'.repeat(64),
    rows: 3,
    bytesPlain: 300,
    reused: false,
  };
}

async function auditEntries(vault: Vault): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of vault.iterateAudit(1)) out.push(e);
  return out;
}

describe('deletion requests and certificates', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  let dir: string;
  let store: ObjectStore;
  let ctx: EraseContext;
  let signer: Signer;
  const aliceMar = cellKey('cell:t1/messages/2026-03/alice', 'alice', '2026-03', [MAR, 'user:t1/alice', 'tenant:t1']);
  const aliceApr = cellKey('cell:t1/messages/2026-04/alice', 'alice', '2026-04', [APR, 'user:t1/alice', 'tenant:t1']);
  const aliceC1 = cellKey('cell:t1/messages/2026-03/alice/c1', 'alice', '2026-03', [MAR, 'user:t1/alice', 'conversation:t1/c1', 'tenant:t1'], 'c1');
  const bobMar = cellKey('cell:t1/messages/2026-03/bob', 'bob', '2026-03', [MAR, 'user:t1/bob', 'tenant:t1']);
  let aliceRequest = '';

  beforeAll(async () => {
    db = await createTestDatabase('lc_erase');
    fx = await migratedVault(db.url, 'lethe', 6);
    vault = fx.vault;
    dir = await mkdtemp(join(tmpdir(), 'lethe-erase-'));
    store = await createFilesystemStore({ path: dir });
    signer = await registeredSigner(vault, 'lifecycle');
    ctx = { vault, store, graceWindowDays: 7, now: () => NOW, signer };
    const ids = ['tenant:t1', 'user:t1/alice', 'user:t1/bob', 'conversation:t1/c1', MAR, APR];
    await vault.insertDimensionKeys(
      ids.map((id) => ({
        id,
        kind: id.slice(0, id.indexOf(':')) as 'tenant',
        tenant: 't1',
        recipient: `age1dim${randomBytes(8).toString('hex')}`,
        wrappedIdentity: new Uint8Array(randomBytes(32)),
      })),
    );
    await vault.insertCellKeys([aliceMar, aliceApr, aliceC1, bobMar]);
    // Cells name an encapsulation; a hold-purpose one needs no snapshot row of its own.
    await vault.insertEncapsulations([
      { id: ENCAPSULATION, purpose: 'hold', snapshotId: null, tenant: 't1', kem: 'x25519', ephemeral: Buffer.alloc(32, 9) },
    ]);
    // s1: alice's March in two tables and bob's; s2: alice's April; s3 abandoned (not counted).
    const snap = async (id: string, cells: SnapshotCell[], complete: boolean) => {
      const begun = await vault.beginSnapshot({ id, previousId: null, runOwner: 'test', store: store.description });
      await vault.recordCopyChanges(
        { id, seq: begun.seq, store: store.description },
        {
          copies: cells.map(({ reused: _, ...c }) => ({ ...c, segment: `${c.table}/t1/${c.period ?? '-'}`, digest: 'd'.repeat(64), fingerprint: 'f'.repeat(64) })),
          superseded: [],
          fingerprints: [],
          cellKeys: [],
        },
      );
      if (complete) await vault.completeSnapshot(id, { manifestKey: `snapshots/${id}.json`, manifestSha256: 'a'.repeat(64), stats: {} });
      else await vault.abandonSnapshot(id);
    };
    await snap('s1', [cell('messages', aliceMar, 0), cell('message_edits', aliceMar, 100), cell('messages', bobMar, 200)], true);
    await snap('s2', [cell('messages', aliceApr, 300)], true);
    await snap('s3', [cell('messages', aliceC1, 400)], false);
  });
  afterAll(async () => {
    await store.close();
    await fx.close();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('records a pending request with an er- id and an erase.request entry; refuses malformed ones', async () => {
    const request = await requestErasure(vault, { tenant: 't1', scope: 'user', subject: 'alice', reason: 'GDPR Art. 17 #1', actor: 'dpo-alice', allowUnsigned: true });
    expect(request.id).toMatch(/^er-[0-9a-z]{16}$/);
    expect(request).toMatchObject({ tenant: 't1', scope: 'user', subject: 'alice', status: 'pending', requestedBy: 'dpo-alice', approvedBy: null });
    aliceRequest = request.id;
    const entry = (await auditEntries(vault)).at(-1);
    expect(entry).toMatchObject({ action: 'erase.request', actor: 'dpo-alice', subject: request.id, details: { keyId: 'user:t1/alice', scope: 'user' } });

    await rejectsWith(requestErasure(vault, { tenant: 't1', scope: 'user', subject: 'x', reason: ' ', actor: 'a', allowUnsigned: true }), ErrorCode.USAGE);
    await rejectsWith(requestErasure(vault, { tenant: 't1', scope: 'user', subject: null, reason: 'r', actor: 'a', allowUnsigned: true }), ErrorCode.USAGE);
    await rejectsWith(requestErasure(vault, { tenant: 't1', scope: 'tenant', subject: 'x', reason: 'r', actor: 'a', allowUnsigned: true }), ErrorCode.USAGE);
    await rejectsWith(requestErasure(vault, { tenant: '', scope: 'tenant', reason: 'r', actor: 'a', allowUnsigned: true }), ErrorCode.USAGE);
    expect((await vault.listEraseRequests()).map((r) => r.id)).toEqual([aliceRequest]);
  });

  it('refuses the requester as approver (two-person rule), in code and in the table', async () => {
    const err = await rejectsWith(approveErasure(ctx, aliceRequest, { actor: 'dpo-alice', allowUnsigned: true }), ErrorCode.REFUSED);
    expect(err.message).toMatch(/requested by dpo-alice, who cannot also approve it \(two-person rule\)/);
    // Another spelling of the same name is the same person.
    await rejectsWith(approveErasure(ctx, aliceRequest, { actor: ' DPO-Alice ', allowUnsigned: true }), ErrorCode.REFUSED);
    expect((await vault.getEraseRequest(aliceRequest))?.status).toBe('pending');
    expect((await vault.getDimensionKeys(['user:t1/alice'])).get('user:t1/alice')?.destroyed).toBe(false);
    await expect(
      rawSql(db.url, `UPDATE lethe.erase_requests SET status = 'approved', approved_by = requested_by, approved_at = now() WHERE id = $1`, [aliceRequest]),
    ).rejects.toThrow(/erase_requests_two_people/);
  });

  it('refuses an unknown id, naming it', async () => {
    const err = await rejectsWith(approveErasure(ctx, 'er-doesnotexist00', { actor: 'dpo-bob', allowUnsigned: true }), ErrorCode.USAGE);
    expect(err.message).toMatch(/no deletion request has id "er-doesnotexist00"/);
  });

  it('refuses while a hold covers the data, naming the case; approves once it is released', async () => {
    await placeHold(vault, { caseId: 'CASE-A', tenant: 't1', user: 'alice', from: '2026-03-01', to: '2026-03-31', reason: 'litigation', actor: 'legal-ann', allowUnsigned: true });
    await placeHold(vault, { caseId: 'CASE-B', tenant: 't1', user: 'bob', reason: 'other litigation', actor: 'legal-ann', allowUnsigned: true });
    // A hold on alice's May does not cover any backed-up cell of hers: it blocks nothing.
    await placeHold(vault, { caseId: 'CASE-MAY', tenant: 't1', user: 'alice', from: '2026-05-01', to: '2026-05-31', reason: 'r', actor: 'legal-ann', allowUnsigned: true });
    const err = await rejectsWith(approveErasure(ctx, aliceRequest, { actor: 'dpo-bob', allowUnsigned: true }), ErrorCode.REFUSED);
    expect(err.message).toMatch(/under legal hold \(case CASE-A\)/);
    expect(err.message).not.toMatch(/CASE-B|CASE-MAY/);
    expect((await vault.getEraseRequest(aliceRequest))?.status).toBe('pending');
    expect((await vault.getDimensionKeys(['user:t1/alice'])).get('user:t1/alice')?.destroyed).toBe(false);

    // A whole-tenant erasure is blocked by every case with covered cells.
    const tenantRequest = await requestErasure(vault, { tenant: 't1', scope: 'tenant', reason: 'customer left', actor: 'dpo-alice', allowUnsigned: true });
    const tenantErr = await rejectsWith(approveErasure(ctx, tenantRequest.id, { actor: 'dpo-bob', allowUnsigned: true }), ErrorCode.REFUSED);
    expect(tenantErr.message).toMatch(/tenant t1 is under legal hold \(case CASE-A, CASE-B\)/);

    await releaseHold(vault, 'CASE-A', { actor: 'legal-ann', allowUnsigned: true });
    const cert = await approveErasure(ctx, aliceRequest, { actor: 'dpo-bob', allowUnsigned: true });
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual(['user:t1/alice']);
    const stored = await vault.getEraseRequest(aliceRequest);
    expect(stored).toMatchObject({ status: 'executed', approvedBy: 'dpo-bob', executedAt: NOW });
    expect(stored?.certificate).toEqual(cert);
    expect((await vault.getDimensionKeys(['user:t1/alice'])).get('user:t1/alice')?.destroyed).toBe(true);
    expect((await vault.getDestructions(['user:t1/alice'])).get('user:t1/alice')?.cause).toEqual({
      kind: 'erasure',
      request: aliceRequest,
      scope: 'user',
    });
    expectNoCheckedOutClients(fx.pool);
  });

  it('signs a certificate listing the keys, cells, snapshots, chain position and grace window', async () => {
    const cert = (await vault.getEraseRequest(aliceRequest))?.certificate as DestructionCertificate;
    const entries = await auditEntries(vault);
    const destroyEntry = entries.find((e) => e.action === 'key.destroy' && e.subject === 'user:t1/alice');
    expect(destroyEntry).toBeDefined();
    expect(cert).toMatchObject({
      format: 'lethe.destruction-certificate.v1',
      request: { id: aliceRequest, tenant: 't1', scope: 'user', subject: 'alice', reason: 'GDPR Art. 17 #1', requestedBy: 'dpo-alice', approvedBy: 'dpo-bob' },
      keysDestroyed: [{ keyId: 'user:t1/alice', auditSeq: destroyEntry?.seq }],
      keysAbsent: [],
      cellsAffected: { count: 3, cellKeyIds: [aliceApr.id, aliceMar.id, aliceC1.id].sort() },
      // s2 wrote alice's April and references s1's alice cells it left unchanged: 3 cells.
      snapshotsAffected: {
        count: 2,
        cells: 5,
        snapshots: [
          { id: 's1', status: 'complete', cells: 2 },
          { id: 's2', status: 'complete', cells: 3 },
        ],
      },
      executedAt: NOW.toISOString(),
      auditChain: { seq: destroyEntry?.seq, hash: destroyEntry?.hash },
      graceWindow: { days: 7, irreversibleAt: '2026-12-05T12:00:00.000Z' },
      signature: { algorithm: 'ed25519', keyId: signer.id },
    });
    // It states what is guaranteed, and no longer that nobody can recover the data from any
    // backup: the vault database's own WAL, archives, replicas and base backups are not lethe's.
    expect(cert.graceWindow.explanation).not.toMatch(/cannot be recovered by anyone|from any backup|irreversible/);
    expect(cert.graceWindow.explanation).toMatch(
      /^Guaranteed now: the destroyed keys' wrapped identities are gone from the live vault tables\. Guaranteed by 2026-12-05T12:00:00\.000Z: lethe's own encrypted vault backups made before this execution are past their 7-day retention/,
    );
    expect(cert.graceWindow.explanation).toMatch(
      /Not guaranteed by lethe: the vault database's own copies \(WAL segments, WAL archives, streaming and logical replicas, base backups, pg_dump copies made by its administrators\)/,
    );
    expect(cert.graceWindow.explanation).toMatch(/final only once those have expired too: on 2026-12-05T12:00:00\.000Z if their retention is kept within the grace window/);
    expect(cert.guarantees).toEqual({
      liveVault: { since: NOW.toISOString(), statement: expect.stringMatching(/set to NULL in the vault and the key tables rewritten \(VACUUM FULL\)/) as string },
      vaultBackups: { until: '2026-12-05T12:00:00.000Z', statement: expect.stringMatching(/made before the execution are past their retention \(7 days\)/) as string },
      outsideLethe: OUTSIDE_LETHE,
      // A plain server, read by its superuser: no archiving, replica or slot, nothing unchecked.
      vaultDurabilityFindings: [],
    });
    expect(OUTSIDE_LETHE.join('\n')).toMatch(/pg_wal[\s\S]*WAL archives[\s\S]*replicas[\s\S]*base backups[\s\S]*pg_dump/);
    // The entries, in order: approve, destroy, execute.
    const mine = entries.filter((e) => e.subject === aliceRequest || e.subject === 'user:t1/alice').map((e) => e.action);
    expect(mine).toEqual(['erase.request', 'erase.approve', 'key.destroy', 'erase.execute']);

    const keys = await vault.getSigningPublicKeys(['lifecycle']);
    expect(verifyCertificate(cert, keys)).toEqual({ ok: true });
    const bucket = JSON.parse(await readFile(join(dir, 'certificates', `${aliceRequest}.json`), 'utf8')) as unknown;
    expect(bucket).toEqual(cert);
    expect(verifyCertificate(bucket, keys)).toEqual({ ok: true });
    const tampered = { ...cert, keysDestroyed: [{ ...cert.keysDestroyed[0], keyId: 'user:t1/bob' }] };
    expect(verifyCertificate(tampered, keys)).toEqual({ ok: false, problem: 'bad signature' });
    expect(verifyCertificate(cert, new Map())).toEqual({ ok: false, problem: `unknown signing key ${signer.id}` });
    expect(verifyCertificate({ ...cert, format: 'x' }, keys).ok).toBe(false);
  });

  it('refuses to approve an executed request again', async () => {
    const err = await rejectsWith(approveErasure(ctx, aliceRequest, { actor: 'dpo-carl', allowUnsigned: true }), ErrorCode.REFUSED);
    expect(err.message).toMatch(/already executed/);
  });

  it('certifies "no key existed" for a subject never backed up, without failing', async () => {
    const ghost = await requestErasure(vault, { tenant: 't1', scope: 'user', subject: 'ghost', reason: 'r', actor: 'dpo-alice', allowUnsigned: true });
    const cert = await approveErasure(ctx, ghost.id, { actor: 'dpo-bob', allowUnsigned: true });
    expect(cert.keysDestroyed).toEqual([]);
    expect(cert.keysAbsent).toEqual([{ keyId: 'user:t1/ghost', note: expect.stringMatching(/no key existed/) as string }]);
    expect(cert.cellsAffected).toEqual({ count: 0, cellKeyIds: [] });
    expect(cert.snapshotsAffected).toEqual({ count: 0, cells: 0, snapshots: [] });
    expect(verifyCertificate(cert, await vault.getSigningPublicKeys(['lifecycle']))).toEqual({ ok: true });
    expect((await vault.getEraseRequest(ghost.id))?.status).toBe('executed');
  });

  it('finishes a request a crash left approved, once', async () => {
    const conv = await requestErasure(vault, { tenant: 't1', scope: 'conversation', subject: 'c1', reason: 'r', actor: 'dpo-alice', allowUnsigned: true });
    // Approved, then the process died before destroying anything.
    await vault.approveEraseRequest(conv.id, 'dpo-bob', {
      check: () => Promise.resolve(),
      audit: () => ({ actor: 'dpo-bob', action: 'erase.approve', subject: conv.id }),
    });
    expect((await vault.getEraseRequest(conv.id))?.status).toBe('approved');
    const cert = await executeApprovedRequest(ctx, conv.id);
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual(['conversation:t1/c1']);
    expect(cert.cellsAffected.cellKeyIds).toEqual([aliceC1.id]);
    // Only an abandoned snapshot held that cell.
    expect(cert.snapshotsAffected.count).toBe(0);
    const executes = (await auditEntries(vault)).filter((e) => e.action === 'erase.execute' && e.subject === conv.id);
    expect(await executeApprovedRequest(ctx, conv.id)).toEqual(cert);
    expect((await auditEntries(vault)).filter((e) => e.action === 'erase.execute' && e.subject === conv.id)).toEqual(executes);
    expect(executes).toHaveLength(1);
  });

  it('a crash after storing the certificate yields that same certificate on the re-run', async () => {
    await vault.insertDimensionKeys([
      { id: 'tenant:t2', kind: 'tenant', tenant: 't2', recipient: `age1dim${randomBytes(8).toString('hex')}`, wrappedIdentity: new Uint8Array(randomBytes(32)) },
    ]);
    const t2 = await requestErasure(vault, { tenant: 't2', scope: 'tenant', reason: 'customer left', actor: 'dpo-alice', allowUnsigned: true });
    const original = vault.markEraseRequestExecuted.bind(vault);
    vault.markEraseRequestExecuted = () => Promise.reject(new Error('killed before recording'));
    try {
      await expect(approveErasure(ctx, t2.id, { actor: 'dpo-bob', allowUnsigned: true })).rejects.toThrow(/killed before recording/);
    } finally {
      vault.markEraseRequestExecuted = original;
    }
    expect((await vault.getEraseRequest(t2.id))?.status).toBe('approved');
    const first = JSON.parse(await readFile(join(dir, 'certificates', `${t2.id}.json`), 'utf8')) as DestructionCertificate;
    const later = { ...ctx, now: () => new Date(NOW.getTime() + 3_600_000) };
    const cert = await executeApprovedRequest(later, t2.id);
    expect(cert).toEqual(first);
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual(['tenant:t2']);
    expect((await vault.getEraseRequest(t2.id))?.executedAt).toEqual(NOW);
  });

  it('keeps the audit chain intact', async () => {
    expect((await vault.verifyAuditChain()).ok).toBe(true);
    expectNoCheckedOutClients(fx.pool);
  });
});
