import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { ErrorCode } from '../../../src/errors/index.ts';
import { backup, initialize, lifecyclePlan, restore } from '../../../src/jobs/tasks.ts';
import { requestErasure } from '../../../src/lifecycle/erase.ts';
import { placeHold } from '../../../src/lifecycle/holds.ts';
import { formatPlan } from '../../../src/lifecycle/plan-format.ts';
import { erasureLine } from '../../../src/report/text.ts';
import type { ReportErasure } from '../../../src/report/document.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import type { DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import { erasePendingAlerts } from '../../../src/daemon/alerts.ts';
import { renderStatusPage } from '../../../src/daemon/status-page.ts';
import { createLogger } from '../../../src/log/index.ts';
import { createLetheEnv, expectExit, jsonOut, queryValue, type LetheEnv, type RawConfig, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { healthyModel } from '../../helpers/status-fixtures.ts';

/**
 * Issue 12: one person erased across every tenant (`erase request --subject U --all-tenants`)
 * in a team-based store of this test's own, where one user id belongs to several teams (the
 * reference store's user ids are per tenant, so it cannot show this). One request, one
 * approval, one certificate; the tenants are found again at approval (a team the person
 * joined after the request is erased too); a legal hold in one team keeps that team's key
 * and the certificate says so; afterwards no snapshot restores a row of theirs in any team,
 * and everyone else's rows restore exactly.
 */

const DDL = `
CREATE TABLE teams (id text PRIMARY KEY, name text NOT NULL);
-- Accounts are global: one person, one id, in any number of teams.
CREATE TABLE people (id text PRIMARY KEY, display_name text NOT NULL);
CREATE TABLE team_members (
  team_id   text NOT NULL REFERENCES teams,
  user_id   text NOT NULL REFERENCES people,
  joined_at timestamptz NOT NULL,
  PRIMARY KEY (team_id, user_id)
);
CREATE TABLE posts (
  id         bigint PRIMARY KEY,
  team_id    text NOT NULL REFERENCES teams,
  user_id    text NOT NULL REFERENCES people,
  body       text NOT NULL,
  created_at timestamptz NOT NULL
);
`;

const MAPPING = {
  schema: 'public',
  tables: {
    teams: { class: 'metadata', primaryKey: ['id'], tenant: 'id' },
    // Every account under one literal tenant: its user key there is one more tenant to find.
    people: { class: 'profiles', primaryKey: ['id'], tenant: { literal: 'accounts' }, author: 'id' },
    team_members: {
      class: 'metadata',
      primaryKey: ['team_id', 'user_id'],
      tenant: 'team_id',
      author: 'user_id',
      timestamp: { column: 'joined_at', type: 'timestamptz' },
    },
    posts: {
      class: 'messages',
      primaryKey: ['id'],
      tenant: 'team_id',
      author: 'user_id',
      timestamp: { column: 'created_at', type: 'timestamptz' },
    },
  },
};

const TABLES = ['people', 'posts', 'team_members', 'teams'] as const;
/** The columns of each table that name a person: the test's own statement, not lethe's mapping. */
const PERSON_COLUMNS: Record<(typeof TABLES)[number], readonly string[]> = {
  teams: [],
  people: ['id'],
  team_members: ['user_id'],
  posts: ['user_id'],
};

// `ann_1` is the person erased everywhere; `annx1` would match a LIKE '%/ann_1' built from
// her id, so it must survive. `dee` is under legal hold in team blue; `cy` (accounts and
// blue) is held in both.
const SEED = `
INSERT INTO teams VALUES ('red', 'Red team'), ('blue', 'Blue team'), ('green', 'Green team');
INSERT INTO people VALUES ('ann_1', 'Ann'), ('annx1', 'Decoy'), ('bob', 'Bob'), ('cy', 'Cy'), ('dee', 'Dee'), ('eli', 'Eli');
INSERT INTO team_members VALUES
  ('red', 'ann_1', '2026-01-03T10:00:00Z'), ('blue', 'ann_1', '2026-02-03T10:00:00Z'),
  ('blue', 'annx1', '2026-01-04T10:00:00Z'), ('red', 'bob', '2026-01-05T10:00:00Z'),
  ('blue', 'cy', '2026-01-06T10:00:00Z'), ('red', 'dee', '2026-01-07T10:00:00Z'), ('blue', 'dee', '2026-01-08T10:00:00Z'),
  ('green', 'bob', '2026-01-09T10:00:00Z'), ('red', 'eli', '2026-01-10T10:00:00Z'), ('green', 'eli', '2026-01-11T10:00:00Z');
INSERT INTO posts VALUES
  (1, 'red', 'ann_1', 'ann in red, january', '2026-01-10T09:00:00Z'),
  (2, 'red', 'ann_1', 'ann in red, february', '2026-02-10T09:00:00Z'),
  (3, 'blue', 'ann_1', 'ann in blue', '2026-02-11T09:00:00Z'),
  (4, 'blue', 'annx1', 'decoy in blue', '2026-02-11T10:00:00Z'),
  (5, 'red', 'bob', 'bob in red', '2026-01-12T09:00:00Z'),
  (6, 'blue', 'cy', 'cy in blue', '2026-02-12T09:00:00Z'),
  (7, 'red', 'dee', 'dee in red', '2026-01-13T09:00:00Z'),
  (8, 'blue', 'dee', 'dee in blue', '2026-02-13T09:00:00Z'),
  (9, 'green', 'bob', 'bob in green', '2026-02-14T09:00:00Z'),
  (12, 'green', 'eli', 'eli in green', '2026-02-15T09:00:00Z');
`;

type Rows = Record<string, string[]>;

async function rowsOf(url: string, where: (table: (typeof TABLES)[number]) => string = () => 'true'): Promise<Rows> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const out: Rows = {};
    for (const table of TABLES) {
      const { rows } = await client.query<{ r: string }>(
        `SELECT t::text AS r FROM public.${client.escapeIdentifier(table)} t WHERE ${where(table)} ORDER BY t::text COLLATE "C"`,
      );
      out[table] = rows.map((r) => r.r);
    }
    return out;
  } finally {
    await client.end();
  }
}

/** SQL: the row names one of `people` (by the test's own person columns) in one of `teams` (any when null). */
function theirs(table: (typeof TABLES)[number], people: readonly string[], teams: readonly string[] | null = null): string {
  const cols = PERSON_COLUMNS[table];
  if (cols.length === 0) return 'false';
  const list = people.map((p) => `'${p}'`).join(', ');
  const who = cols.map((c) => `t.${c} IN (${list})`).join(' OR ');
  if (teams === null) return `(${who})`;
  // people rows all belong to the literal tenant `accounts`.
  const team = table === 'people' ? "'accounts'" : 't.team_id';
  return `((${who}) AND ${team} IN (${teams.map((t) => `'${t}'`).join(', ')}))`;
}

describe('erasure of a person across every tenant', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let rt: Runtime;
  /** Each snapshot with the rows that must restore: as taken, less ann_1's and eli's everywhere and dee's in red and accounts (blue is held). */
  const snapshots: { id: string; survivors: Rows }[] = [];
  let requestId = '';
  let certificate: DestructionCertificate;
  let raw: RawConfig;
  const cli = (...args: string[]) => env.cli([...args, '--config', env.configPath]);

  async function takeBackup(): Promise<void> {
    const result = await backup(rt, { actor: 'test' });
    const survivors = await rowsOf(env.chat.url, (t) => `NOT (${theirs(t, ['ann_1', 'eli'])} OR ${theirs(t, ['dee'], ['red', 'accounts'])})`);
    snapshots.push({ id: result.snapshotId, survivors });
  }

  async function request(person: string): Promise<{ id: string; tenants: { tenant: string; keyId: string; cells: number; snapshots: number }[] }> {
    const out = await cli('erase', 'request', '--subject', person, '--all-tenants', '--reason', `GDPR Art. 17 ${person}`, '--actor', 'alice', '--json');
    expectExit(out, 0);
    return jsonOut(out) as { id: string; tenants: { tenant: string; keyId: string; cells: number; snapshots: number }[] };
  }

  beforeAll(async () => {
    template = await createTestDatabase('lc_alltenants_tpl');
    const client = new pg.Client({ connectionString: template.url });
    await client.connect();
    try {
      await client.query(DDL);
      await client.query(SEED);
    } finally {
      await client.end();
    }
    env = await createLetheEnv({ template: template.name });
    raw = { ...env.raw, chatStore: { database: { url: env.chat.url }, mapping: MAPPING } };
    await env.writeConfig('lethe.yaml', raw);
    rt = new Runtime(parseConfig(raw, env.dir), createLogger('warn'));
    await initialize(rt, 'test');
    await takeBackup();
  }, 120_000);
  afterAll(async () => {
    await rt.close();
    await env.cleanup();
    await template.drop();
  });

  it('a request lists every tenant where the person has a key, matched exactly; an unknown person is refused', async () => {
    const r = await request('ann_1');
    requestId = r.id;
    expect(r.tenants.map((t) => [t.tenant, t.keyId])).toEqual([
      ['accounts', 'user:accounts/ann_1'],
      ['blue', 'user:blue/ann_1'],
      ['red', 'user:red/ann_1'],
    ]);
    // accounts: her profile; red: membership and two posts in two months; blue: membership and a post.
    for (const t of r.tenants) {
      expect(t.cells).toBeGreaterThan(0);
      expect(t.snapshots).toBe(1);
    }
    const human = await cli('erase', 'request', '--subject', 'ann_1', '--all-tenants', '--reason', 'x', '--print-statement');
    expectExit(human, 0);
    expect(human.stdout).toContain('tenant: null\ntenants: "all"\nscope: "user"\nsubject: "ann_1"\n');
    expect(human.stderr).toContain('user "ann_1" has a key in 3 tenants');

    // Exact match: neither a prefix nor a LIKE pattern finds her.
    for (const subject of ['ann_', 'ann%', 'ann']) {
      await expect(
        requestErasure(await rt.vault(), { tenant: null, scope: 'user', subject, reason: 'x', actor: 'alice', allowUnsigned: true }),
      ).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringContaining(`no tenant of this vault has data of user "${subject}"`) as unknown });
    }
    const mixed = await cli('erase', 'request', '--subject', 'ann_1', '--all-tenants', '--tenant', 'red', '--reason', 'x', '--actor', 'alice');
    expectExit(mixed, 2);
    expect(mixed.stderr).toContain('give --subject U alone');
    // With --tenant T instead, --subject U is that tenant only (the same act as --user U).
    const one = await cli('erase', 'request', '--tenant', 'red', '--subject', 'ann_1', '--reason', 'x', '--print-statement');
    expectExit(one, 0);
    expect(one.stdout).toContain('tenant: "red"\nscope: "user"\nsubject: "ann_1"\n');
  });

  it('the daemon alert, the status page and the plan show a request without a tenant', async () => {
    const vault = await rt.vault();
    const pending = (await vault.listEraseRequests()).filter((r) => r.id === requestId);
    const alerts = erasePendingAlerts(pending, new Date(Date.now() + 30 * 86_400_000), 7);
    expect(alerts).toHaveLength(1);
    expect(alerts[0]?.summary).toContain('(every tenant, user)');
    const model = healthyModel();
    const html = renderStatusPage({
      ...model,
      pendingErasures: [{ id: requestId, status: 'pending', tenant: null, scope: 'user', requestedAt: new Date(), requestedBy: 'alice', ageDays: 0, overdue: false }],
    });
    expect(html).toContain('<em>every tenant</em>');
    expect(formatPlan(await lifecyclePlan(rt, { now: new Date() }))).toContain(`${requestId}: user ann_1 in every tenant`);
  });

  it('one approval erases her in every tenant found at approval, with one certificate', async () => {
    // After the request she joins team green and posts there: approval finds it too.
    await queryValue(env.chat.url, "INSERT INTO team_members VALUES ('green', 'ann_1', '2026-03-01T10:00:00Z') RETURNING 1");
    await queryValue(env.chat.url, "INSERT INTO posts VALUES (10, 'green', 'ann_1', 'ann in green', '2026-03-02T09:00:00Z'), (11, 'red', 'bob', 'bob again', '2026-03-02T10:00:00Z') RETURNING 1");
    await takeBackup();

    const statement = await cli('erase', 'approve', requestId, '--print-statement');
    expectExit(statement, 0);
    expect(statement.stdout).toContain(`request: "${requestId}"\ntenant: null\ntenants: "all"\n`);
    expect(statement.stderr).toContain('user "ann_1" has a key in 4 tenants');
    expect(statement.stderr).toMatch(/tenant "green"\s+user:green\/ann_1/);

    const approve = await cli('erase', 'approve', requestId, '--actor', 'bob', '--json');
    expectExit(approve, 0);
    certificate = (jsonOut(approve) as { certificate: DestructionCertificate }).certificate;
    expect(certificate.request).toMatchObject({ id: requestId, tenant: null, scope: 'user', subject: 'ann_1', approvedBy: 'bob' });
    expect(certificate.keysDestroyed.map((k) => k.keyId).sort()).toEqual(['user:accounts/ann_1', 'user:blue/ann_1', 'user:green/ann_1', 'user:red/ann_1']);
    expect(certificate.allTenants?.tenants.map((t) => [t.tenant, t.outcome])).toEqual([
      ['accounts', 'destroyed'],
      ['blue', 'destroyed'],
      ['green', 'destroyed'],
      ['red', 'destroyed'],
    ]);
    expect(certificate.allTenants?.statement).toContain(`One deletion request (${requestId}), approved once by bob`);
    expect(certificate.subjectColumns?.tables).toEqual([
      { table: 'people', columns: ['id'] },
      { table: 'posts', columns: ['user_id'] },
      { table: 'team_members', columns: ['user_id'] },
    ]);
    expect(certificate.snapshotsAffected.count).toBe(2);

    // One approval and one execution in the audit log; the certificate in the vault and bucket.
    const count = (action: string) =>
      queryValue<string>(env.vaultDb.url, `SELECT count(*)::text AS v FROM lethe.audit_log WHERE action = $1 AND subject = $2`, [action, requestId]);
    expect(await count('erase.approve')).toBe('1');
    expect(await count('erase.execute')).toBe('1');
    const show = await cli('erase', 'show', requestId);
    expectExit(show, 0);
    expect(show.stdout).toContain('erased:       user ann_1 in every tenant');
    expect(show.stdout).toMatch(/tenant "green"\s+user:green\/ann_1\s+DESTROYED/);
    expect(show.stdout).toContain('subject columns: The destroyed user keys make unreadable');
    expect(show.stdout).toContain('signature: valid');
  });

  it('a hold on the person in one tenant keeps that tenant only; held everywhere is refused', async () => {
    const vault = await rt.vault();
    const by = { actor: 'carol', allowUnsigned: true, reason: 'litigation' };
    await placeHold(vault, { caseId: 'CASE-9', tenant: 'blue', user: 'dee', ...by });
    await placeHold(vault, { caseId: 'CASE-10', tenant: 'blue', user: 'cy', ...by });
    await placeHold(vault, { caseId: 'CASE-10', tenant: 'accounts', user: 'cy', ...by });
    const asAlice = { tenant: null, scope: 'user' as const, reason: 'GDPR Art. 17', actor: 'alice', allowUnsigned: true };

    const dee = await requestErasure(vault, { ...asAlice, subject: 'dee' });
    const approve = await cli('erase', 'approve', dee.id, '--actor', 'bob', '--json');
    expectExit(approve, 0);
    const cert = (jsonOut(approve) as { certificate: DestructionCertificate }).certificate;
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual(['user:accounts/dee', 'user:red/dee']);
    const kept = cert.allTenants?.tenants.find((t) => t.tenant === 'blue');
    expect(kept).toMatchObject({ keyId: 'user:blue/dee', outcome: 'kept', cases: ['CASE-9'] });
    expect(kept?.note).toContain('lethe erase request --tenant blue --user dee');
    expect(cert.allTenants?.statement).toContain('kept under legal hold in 1 ("blue")');

    // cy is held in every tenant she is in: the request is refused as a one-tenant one would be.
    const cy = await requestErasure(vault, { ...asAlice, subject: 'cy' });
    const refused = await cli('erase', 'approve', cy.id, '--actor', 'bob');
    expectExit(refused, 3);
    expect(refused.stderr).toContain('user cy in every tenant is under legal hold (case CASE-10)');
    const list = await cli('erase', 'list');
    expectExit(list, 0);
    expect(list.stdout).toContain(`${cy.id}  PENDING  erase user cy in every tenant`);
    expect(list.stdout).toContain(`${dee.id}  EXECUTED  erase user dee in every tenant`);
  });

  it('an approval killed before it executes is finished by lifecycle apply, with the same certificate', async () => {
    const eli = await requestErasure(await rt.vault(), { tenant: null, scope: 'user', subject: 'eli', reason: 'GDPR Art. 17', actor: 'alice', allowUnsigned: true });
    const killed = await env.cli(['erase', 'approve', eli.id, '--actor', 'bob', '--config', env.configPath], { env: { LETHE_FAILPOINTS: 'erase.after-approve' } });
    expect(killed.signal).toBe('SIGKILL');
    expect((await (await rt.vault()).getEraseRequest(eli.id))?.status).toBe('approved');
    expectExit(await cli('lifecycle', 'apply', '--actor', 'test'), 0);
    const done = await (await rt.vault()).getEraseRequest(eli.id);
    const cert = done?.certificate as DestructionCertificate;
    expect(done?.status).toBe('executed');
    expect(cert.keysDestroyed.map((k) => k.keyId)).toEqual(['user:accounts/eli', 'user:green/eli', 'user:red/eli']);
    expect(cert.allTenants?.tenants.every((t) => t.outcome === 'destroyed')).toBe(true);
    expect(cert.subjectColumns?.tables.map((t) => t.table)).toEqual(['people', 'posts', 'team_members']);
  });

  it('no snapshot restores a row of theirs in any tenant; everyone else restores exactly', async () => {
    expect(snapshots).toHaveLength(2);
    for (const snap of snapshots) {
      const target = await env.database('lc_alltenants_restore');
      await restore(rt, { snapshot: snap.id, targetUrl: target.url, replace: false, actor: 'test' });
      const restored = await rowsOf(target.url);
      expect(restored).toEqual(snap.survivors);
      expect(Object.values(restored).flat().some((r) => r.includes('ann_1'))).toBe(false);
      expect(restored['posts']?.some((r) => r.includes('dee in blue'))).toBe(true);
      expect(restored['posts']?.some((r) => r.includes('decoy in blue'))).toBe(true);
    }
    // The bucket holds each certificate and tombstone exactly as the vault records them. (Before
    // the vault restore below, whose second vault writes its own audit entries to this bucket.)
    expectExit(await cli('audit', 'verify'), 0);
  });

  it('a vault backup carries the all-tenant requests, and vault restore brings them back', async () => {
    const written = await cli('vault', 'backup', '--actor', 'test', '--json');
    expectExit(written, 0);
    const { key } = jsonOut(written) as { key: string };
    const target = await env.database('lc_alltenants_vault');
    const config = await env.writeConfig('restored.yaml', { ...raw, vault: { database: { url: target.url }, schema: 'lethe' } });
    expectExit(await env.cli(['vault', 'restore', '--from', key, '--actor', 'test', '--config', config]), 0);
    const restored = await queryValue<string>(
      target.url,
      `SELECT string_agg(subject || ':' || status, ',' ORDER BY subject) AS v FROM lethe.erase_requests WHERE tenant IS NULL`,
    );
    expect(restored).toBe('ann_1:executed,cy:pending,dee:executed,eli:executed');
  });

  it('the evidence report lists the all-tenant requests', async () => {
    const day = new Date().toISOString().slice(0, 10);
    const report = await cli('report', '--from', day, '--to', day, '--actor', 'test', '--json');
    expectExit(report, 0);
    const doc = jsonOut(report) as { erasures: { requests: ReportErasure[] } };
    const listed = doc.erasures.requests.find((r) => r.id === requestId);
    expect(listed).toMatchObject({ tenant: null, statusAtEnd: 'executed' });
    expect(erasureLine(listed as ReportErasure)).toContain('user ann_1 in every tenant');
  });
});
