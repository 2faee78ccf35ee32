import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import { verifyCertificate, type DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  queryValue,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * `lethe hold` and `lethe erase` through the real CLI over a real backup: exit codes (0 ok,
 * 2 bad usage, 3 refused by rule), --json output, the certificate against the vault's facts.
 */
describe('lethe hold / lethe erase (CLI)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let tenant = '';
  let user = '';
  let snapshotId = '';
  let requestId = '';
  const run = (...args: string[]) => env.cli([...args, '--config', env.configPath]);

  beforeAll(async () => {
    template = await createChatTemplate('lc_erase_cli_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'test');
    snapshotId = (await backup(env.rt, { actor: 'test' })).snapshotId;
    const pick = await queryValue<string>(
      env.chat.url,
      `SELECT c.tenant_id::text || '/' || m.sender_id::text AS v FROM public.messages m
         JOIN public.conversations c ON c.id = m.conversation_id
        GROUP BY c.tenant_id, m.sender_id ORDER BY count(*) DESC, 1 LIMIT 1`,
    );
    [tenant = '', user = ''] = pick.split('/');
  }, 240_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('refuses bad usage with exit code 2 and the usage line', async () => {
    const noReason = await run('hold', 'place', '--case', 'C-1', '--tenant', tenant, '--actor', 'legal-ann');
    expectExit(noReason, 2);
    expect(noReason.stderr).toMatch(/missing --reason TEXT[\s\S]*usage: lethe hold place/);
    const badDate = await run('hold', 'place', '--case', 'C-1', '--tenant', tenant, '--from', 'soon', '--reason', 'r', '--actor', 'a', '--json');
    expectExit(badDate, 2);
    expect(jsonOut(badDate)).toMatchObject({ error: { code: 'USAGE', message: expect.stringMatching(/--from "soon" is not a date/) as string } });
    const unknownTenant = await run('hold', 'place', '--case', 'C-1', '--tenant', '999999', '--reason', 'r', '--actor', 'a');
    expectExit(unknownTenant, 2);
    expect(unknownTenant.stderr).toMatch(/tenant "999999" has no backed-up data/);
    const both = await run('erase', 'request', '--tenant', tenant, '--user', user, '--all', '--reason', 'r', '--actor', 'a');
    expectExit(both, 2);
    expect(both.stderr).toMatch(/exactly one of --user U, --conversation C or --all/);
    const noId = await run('erase', 'approve', '--actor', 'b');
    expectExit(noId, 2);
  });

  it('places a hold and lists it', async () => {
    const placed = await run('hold', 'place', '--case', 'CASE-9', '--tenant', tenant, '--user', user, '--reason', 'litigation', '--actor', 'legal-ann', '--json');
    expectExit(placed, 0);
    expect(jsonOut(placed)).toMatchObject({ caseId: 'CASE-9', tenant, user, from: null, to: null, active: true, placedBy: 'legal-ann' });
    const list = await run('hold', 'list', '--json');
    expectExit(list, 0);
    expect((jsonOut(list) as { holds: { caseId: string }[] }).holds.map((h) => h.caseId)).toEqual(['CASE-9']);
    const human = await run('hold', 'list');
    expectExit(human, 0);
    expect(human.stdout).toMatch(new RegExp(`CASE-9  ACTIVE  tenant ${tenant}, user ${user}, all dates`));
  });

  it('requests an erasure and prints its id', async () => {
    const out = await run('erase', 'request', '--tenant', tenant, '--user', user, '--reason', 'GDPR Art. 17 #5', '--actor', 'dpo-dan', '--json');
    expectExit(out, 0);
    const request = jsonOut(out) as { id: string; status: string; keyId: string };
    expect(request.id).toMatch(/^er-[0-9a-z]+$/);
    expect(request.status).toBe('pending');
    expect(request.keyId).toBe(userKeyId(tenant, user));
    requestId = request.id;
  });

  it('refuses by rule with exit code 3: the requester, then the hold (naming the case); unknown ids with 2', async () => {
    const self = await run('erase', 'approve', requestId, '--actor', 'dpo-dan');
    expectExit(self, 3);
    expect(self.stderr).toMatch(/two-person rule/);
    const held = await run('erase', 'approve', requestId, '--actor', 'dpo-eve', '--json');
    expectExit(held, 3);
    expect(jsonOut(held)).toMatchObject({ error: { code: 'REFUSED', rule: 'legal-hold', cases: ['CASE-9'] } });
    expect(JSON.stringify(jsonOut(held))).toContain('CASE-9');
    const unknown = await run('erase', 'approve', 'er-nosuchrequest0', '--actor', 'dpo-eve');
    expectExit(unknown, 2);
    expect(unknown.stderr).toMatch(/er-nosuchrequest0/);
    const pending = await run('erase', 'show', requestId);
    expectExit(pending, 2);
    expect(pending.stderr).toMatch(/is pending: it has no certificate/);
    const keys = await (await env.rt.vault()).getDimensionKeys([userKeyId(tenant, user)]);
    expect(keys.get(userKeyId(tenant, user))?.destroyed).toBe(false);
  });

  it('approves after the release and prints a verifiable certificate', async () => {
    const release = await run('hold', 'release', '--case', 'CASE-9', '--actor', 'legal-ann');
    expectExit(release, 0);
    expect(release.stdout).toMatch(/case CASE-9 released by legal-ann: 1 selector/);
    const again = await run('hold', 'release', '--case', 'CASE-9', '--actor', 'legal-ann');
    expectExit(again, 3);

    const approve = await run('erase', 'approve', requestId, '--actor', 'dpo-eve', '--json');
    expectExit(approve, 0);
    const out = jsonOut(approve) as { status: string; certificate: DestructionCertificate; vaultDurability: { code: string }[] };
    expect(out.status).toBe('executed');
    // The shared test server is plain: no WAL archiving, replica or slot to warn about.
    expect(out.vaultDurability).toEqual([]);
    expect(out.certificate.guarantees?.vaultDurabilityFindings).toEqual([]);
    expect(approve.stderr).not.toMatch(/lethe: warning|"finding"/);

    const show = await run('erase', 'show', requestId, '--json');
    expectExit(show, 0);
    const cert = jsonOut(show) as DestructionCertificate;
    expect(cert).toEqual(out.certificate);
    const vault = await env.rt.vault();
    expect(verifyCertificate(cert, await vault.getSigningPublicKeys(['lifecycle']))).toEqual({ ok: true });
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual([userKeyId(tenant, user)]);
    const cellKeys = (await vault.cellKeysNeeding([userKeyId(tenant, user)])).map((k) => k.id);
    expect(cellKeys.length).toBeGreaterThan(0);
    expect(cert.cellsAffected).toEqual({ count: cellKeys.length, cellKeyIds: cellKeys });
    expect(cert.snapshotsAffected.snapshots.map((s) => s.id)).toEqual([snapshotId]);
    expect(cert.snapshotsAffected.cells).toBeGreaterThanOrEqual(cellKeys.length);
    expect(cert.graceWindow.days).toBe(7);

    const human = await run('erase', 'show', requestId);
    expectExit(human, 0);
    expect(human.stdout).toMatch(/key destroyed: user:/);
    expect(human.stdout).toMatch(/signature: valid/);
    expect(human.stdout).toMatch(/grace window: 7 days/);
    expect(human.stdout).toMatch(/guaranteed from \S+: the destroyed keys are gone from the live vault tables/);
    expect(human.stdout).toMatch(/NOT guaranteed by lethe: [\s\S]*- WAL archives of the vault database/);
    expect(human.stdout).toMatch(/seen at execution: no WAL archiving, attached replica or replication slot/);
    expect(human.stdout).not.toMatch(/irreversible|cannot be recovered/);

    const list = await run('erase', 'list', '--json');
    expectExit(list, 0);
    expect((jsonOut(list) as { requests: unknown[] }).requests).toEqual([
      expect.objectContaining({ id: requestId, status: 'executed', approvedBy: 'dpo-eve', certificate: `certificates/${requestId}.json` }),
    ]);
    const executedAgain = await run('erase', 'approve', requestId, '--actor', 'dpo-fay');
    expectExit(executedAgain, 3);
  }, 120_000);

  it('leaves the audit chain intact, with every hold and erasure step in it', async () => {
    const out = await run('audit', 'verify', '--json');
    expectExit(out, 0);
    const actions: string[] = [];
    for await (const e of (await env.rt.vault()).iterateAudit(1)) actions.push(e.action);
    expect(actions.filter((a) => a.startsWith('hold.') || a.startsWith('erase.') || a === 'key.destroy')).toEqual([
      'hold.place',
      'erase.request',
      'hold.release',
      'erase.approve',
      'key.destroy',
      'erase.execute',
    ]);
  });
});
