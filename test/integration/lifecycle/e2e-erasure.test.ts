import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import { addMessages } from '../../../src/store/add-messages.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import { userKeyId } from '../../../src/cells/ids.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { byUser, contents, notByUser, restoreToNewDatabase } from './fixture.ts';

/**
 * Must hold (issue 3, erasure): after the erasure of user U is approved, a restore of every
 * snapshot, old and new, contains none of U's rows while every other row is intact, and
 * verify reports U's cells as shredded (with the destruction record) and nothing as failed.
 */
describe('erasure of one user across every snapshot', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let user: string;
  let tenant: string;
  const snapshots: string[] = [];
  /** The chat store's rows other than U's, as each snapshot saw them. */
  const othersAt: Record<string, TableContent>[] = [];
  let requestId: string;

  beforeAll(async () => {
    template = await createChatTemplate('lc_erase_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    ({ tenant, user } = await demoSample(env.chat.url));
    const keep = (table: string): string => notByUser(table, user);
    snapshots.push((await backup(env.rt, { actor: 'e2e' })).snapshotId);
    othersAt.push(await contents(env.chat.url, keep));
    await addMessages(env.chat.url, { count: 400, seed: 77, at: new Date('2026-11-20T00:00:00Z') });
    snapshots.push((await backup(env.rt, { actor: 'e2e' })).snapshotId);
    othersAt.push(await contents(env.chat.url, keep));
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('creates a pending request and prints its id', async () => {
    const out = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'GDPR Art. 17 request #1', '--actor', 'alice', '--json']);
    expectExit(out, 0);
    const request = jsonOut(out) as { id: string; status: string };
    expect(request.id).toMatch(/^er-/);
    expect(request.status).toBe('pending');
    requestId = request.id;
  });

  it('refuses approval by the requester (two-person rule), destroying nothing', async () => {
    const out = await env.cli(['erase', 'approve', requestId, '--config', env.configPath, '--actor', 'alice']);
    expect(out.code).not.toBe(0);
    expect(`${out.stdout}${out.stderr}`).toMatch(/two-person|different person|same person|requested/i);
    const keys = await (await env.rt.vault()).getDimensionKeys([userKeyId(tenant, user)]);
    expect(keys.get(userKeyId(tenant, user))?.destroyed).toBe(false);
  });

  it('refuses an unknown request id', async () => {
    const out = await env.cli(['erase', 'approve', 'er-doesnotexist0', '--config', env.configPath, '--actor', 'bob']);
    expect(out.code).not.toBe(0);
    expect(`${out.stdout}${out.stderr}`).toMatch(/er-doesnotexist0/);
  });

  it('executes when a second person approves, destroying the user key', async () => {
    const out = await env.cli(['erase', 'approve', requestId, '--config', env.configPath, '--actor', 'bob', '--json']);
    expectExit(out, 0);
    const keys = await (await env.rt.vault()).getDimensionKeys([userKeyId(tenant, user)]);
    expect(keys.get(userKeyId(tenant, user))?.destroyed).toBe(true);
    // The next backup leaves the erased user's rows (still in the chat store) out.
    const after = await backup(env.rt, { actor: 'e2e' });
    expect(after.cellsSkippedShredded).toBeGreaterThan(0);
    snapshots.push(after.snapshotId);
    othersAt.push(await contents(env.chat.url, (t) => notByUser(t, user)));
  }, 120_000);

  it('restores every snapshot without any of the user\'s rows and with everyone else\'s intact', async () => {
    for (const [i, snapshot] of snapshots.entries()) {
      const url = await restoreToNewDatabase(env, snapshot);
      const theirs = await contents(url, (t) => byUser(t, user));
      for (const [table, content] of Object.entries(theirs)) expect(content.rows, `${snapshot} ${table}`).toBe(0);
      expect(await contents(url, (t) => notByUser(t, user)), snapshot).toEqual(othersAt[i]);
    }
  }, 240_000);

  it('verifies every snapshot: the user\'s cells shredded with their record, nothing failed', async () => {
    for (const snapshot of snapshots.slice(0, 2)) {
      const result = await verify(env.rt, { snapshot, actor: 'e2e' });
      expect(result.cellsFailed, JSON.stringify(result.findings)).toBe(0);
      expect(result.ok, JSON.stringify(result.findings)).toBe(true);
      expect(result.cellsShredded).toBeGreaterThan(0);
      expect(result.shredded.map((s) => s.keyId)).toEqual([userKeyId(tenant, user)]);
      expect(result.shredded[0]?.record.cause).toMatchObject({ kind: 'erasure', request: requestId });
    }
    const latest = await verify(env.rt, { snapshot: snapshots[2] ?? '', actor: 'e2e' });
    expect(latest.ok, JSON.stringify(latest.findings)).toBe(true);
  }, 240_000);

  it('keeps the audit chain intact', async () => {
    const out = await env.cli(['audit', 'verify', '--config', env.configPath, '--json']);
    expectExit(out, 0);
  });
});
