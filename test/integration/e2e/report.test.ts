import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import type { DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import { EMBED_ID, verifyReport, type EvidenceReport } from '../../../src/report/index.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import { readTree } from '../../helpers/tree.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  queryValue,
  REPO_ROOT,
  type CliResult,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

const exec = promisify(execFile);

/**
 * `lethe report` end to end: a backup, a passing and a deliberately failing restore drill, a
 * hold placed and released and one left active, an executed erasure with its certificate and
 * a pending one; then the report lists them with the right counts, verifies with the stock
 * tools exactly as docs/evidence.md tells an auditor (the commands are taken from the doc),
 * and stops verifying when one byte of it changes.
 */
describe('lethe report (evidence for auditors)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let work: string;
  let snap: BackupResult;
  let snapStartedAt: Date;
  let snapCompletedAt: Date;
  let erasedKey = '';
  let executedId = '';
  let pendingId = '';
  let certificate: DestructionCertificate;
  let day = '';
  const run = (...args: string[]): Promise<CliResult> =>
    env.cli([...args, '--config', env.configPath]);

  /** A shell recipe from docs/evidence.md: the ```sh block that starts with `# auditor: NAME`. */
  async function recipe(name: string): Promise<string> {
    const doc = await readFile(join(REPO_ROOT, 'docs', 'evidence.md'), 'utf8');
    const blocks = [...doc.matchAll(/^( *)```sh\n([\s\S]*?)^ *```$/gm)];
    for (const [, indent = '', body = ''] of blocks) {
      const lines = body
        .split('\n')
        .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l));
      if (lines[0] === `# auditor: ${name}`) return lines.join('\n');
    }
    throw new Error(`docs/evidence.md has no sh block starting with "# auditor: ${name}"`);
  }

  /** Runs a recipe with bash in `dir`; resolves with its output and exit code. */
  async function shell(script: string, dir: string): Promise<{ code: number; out: string }> {
    try {
      const { stdout, stderr } = await exec('bash', ['-o', 'pipefail', '-c', script], { cwd: dir });
      return { code: 0, out: stdout + stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === 'number' ? e.code : 1,
        out: (e.stdout ?? '') + (e.stderr ?? ''),
      };
    }
  }

  /** A directory holding `report.json` (these bytes) and the escrowed lifecycle public key. */
  async function auditorDir(name: string, json: string): Promise<string> {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'report.json'), json);
    await copyFile(
      join(env.dir, 'lifecycle-signing.key.pub'),
      join(dir, 'lifecycle-signing.key.pub'),
    );
    return dir;
  }

  async function reportJson(
    ...args: string[]
  ): Promise<{ result: CliResult; report: EvidenceReport }> {
    const result = await run('report', ...args, '--json');
    return { result, report: jsonOut(result) as EvidenceReport };
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'lethe-report-'));
    template = await createChatTemplate('e2e_report_tpl');
    env = await createLetheEnv({
      template: template.name,
      config: { daemon: { objectives: { rpoMinutes: 1440, rtoMinutes: 120 } } },
    });
    await initialize(env.rt, 'test');
    snap = await backup(env.rt, { actor: 'test' });
    const vault = await env.rt.vault();
    const record = await vault.getSnapshot(snap.snapshotId);
    snapStartedAt = record.startedAt;
    snapCompletedAt = record.completedAt;
    day = snapStartedAt.toISOString().slice(0, 10);

    // A drill that passes, then one that fails: a flipped byte in a cell of a pack.
    expect((await verify(env.rt, { snapshot: snap.snapshotId, actor: 'test' })).ok).toBe(true);
    const cell = (await readTree(env.storePath ?? '', snap.manifest)).cells[0];
    if (cell === undefined) throw new Error('fixture: no cells');
    const packPath = join(env.storePath ?? '', ...cell.pack.split('/'));
    const original = await readFile(packPath);
    const flipped = Buffer.from(original);
    const at = cell.offset + Math.floor(cell.length / 2);
    flipped[at] = (flipped[at] ?? 0) ^ 0x01;
    await writeFile(packPath, flipped);
    try {
      expect((await verify(env.rt, { snapshot: snap.snapshotId, actor: 'test' })).ok).toBe(false);
    } finally {
      await writeFile(packPath, original);
    }

    const picks = await queryValue<string>(
      env.chat.url,
      `SELECT string_agg(t || '/' || u, ',') AS v FROM (
         SELECT c.tenant_id::text AS t, m.sender_id::text AS u FROM public.messages m
           JOIN public.conversations c ON c.id = m.conversation_id
          GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 3) x`,
    );
    const [[t1 = '', u1 = ''] = [], [t2 = '', u2 = ''] = [], [t3 = '', u3 = ''] = []] = picks
      .split(',')
      .map((p) => p.split('/'));
    const conversation = await queryValue<string>(
      env.chat.url,
      'SELECT id::text AS v FROM public.conversations WHERE tenant_id = $1 ORDER BY id LIMIT 1',
      [t3],
    );
    erasedKey = userKeyId(t1, u1);

    // A hold placed and released, one left active; an erasure executed, one left pending.
    expectExit(
      await run(
        'hold',
        'place',
        '--case',
        'CASE-A',
        '--tenant',
        t2,
        '--user',
        u2,
        '--reason',
        'litigation A',
        '--actor',
        'legal-ann',
      ),
      0,
    );
    expectExit(
      await run(
        'hold',
        'place',
        '--case',
        'CASE-B',
        '--tenant',
        t3,
        '--user',
        u3,
        '--from',
        '2025-01-01',
        '--reason',
        'litigation B <b>&',
        '--actor',
        'legal-ann',
      ),
      0,
    );
    expectExit(await run('hold', 'release', '--case', 'CASE-A', '--actor', 'legal-bob'), 0);
    const requested = await run(
      'erase',
      'request',
      '--tenant',
      t1,
      '--user',
      u1,
      '--reason',
      'GDPR Art. 17 ticket 5',
      '--actor',
      'dpo-dan',
      '--json',
    );
    expectExit(requested, 0);
    executedId = (jsonOut(requested) as { id: string }).id;
    const pending = await run(
      'erase',
      'request',
      '--tenant',
      t3,
      '--conversation',
      conversation,
      '--reason',
      'GDPR Art. 17 ticket 6',
      '--actor',
      'dpo-dan',
      '--json',
    );
    expectExit(pending, 0);
    pendingId = (jsonOut(pending) as { id: string }).id;
    const approved = await run('erase', 'approve', executedId, '--actor', 'dpo-eve', '--json');
    expectExit(approved, 0);
    certificate = (jsonOut(approved) as { certificate: DestructionCertificate }).certificate;
  }, 300_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    await rm(work, { recursive: true, force: true });
  });

  it('lists the period with the right counts, signed by the lifecycle key', async () => {
    const today = new Date().toISOString().slice(0, 10);
    const { result, report } = await reportJson(
      '--from',
      day,
      '--to',
      today,
      '--actor',
      'auditor-ada',
    );
    expectExit(result, 0);
    const vault = await env.rt.vault();
    expect(verifyReport(report, await vault.getSigningPublicKeys(['lifecycle']))).toEqual({
      ok: true,
    });
    expect(report.format).toBe('lethe.evidence-report.v1');
    expect(report.period).toEqual({
      from: `${day}T00:00:00.000Z`,
      to: `${today}T23:59:59.999Z`,
      asGiven: { from: day, to: today },
    });
    expect(report.generatedBy).toBe('auditor-ada');
    expect(report.objectives).toEqual({
      rpoSeconds: 86_400,
      rtoSeconds: 7200,
      source: 'daemon.objectives',
    });

    expect(report.backups).toMatchObject({
      started: 1,
      complete: 1,
      abandoned: 0,
      running: 0,
      expired: 0,
      bytesPlain: snap.bytesPlain,
      bytesStored: snap.bytesStored,
    });
    expect(report.backups.snapshots).toEqual([
      expect.objectContaining({
        id: snap.snapshotId,
        status: 'complete',
        startedAt: snapStartedAt.toISOString(),
        completedAt: snapCompletedAt.toISOString(),
        cells: snap.cells,
        cellsWritten: snap.cellsWritten,
        cellsReused: snap.cellsReused,
        bytesPlain: snap.bytesPlain,
      }),
    ]);

    expect(report.drills).toMatchObject({ count: 2, passed: 1, failed: 1 });
    const [passed, failed] = report.drills.drills;
    expect(passed).toMatchObject({
      snapshotId: snap.snapshotId,
      ok: true,
      cells: snap.cells,
      cellsFailed: 0,
      findings: 0,
      rtoWithinObjective: true,
    });
    expect(passed?.rtoMs).toBeGreaterThan(0);
    expect(passed?.rpoSeconds).toBeGreaterThanOrEqual(0);
    expect(failed).toMatchObject({ snapshotId: snap.snapshotId, ok: false, cellsFailed: 1 });
    expect(failed?.findings).toBeGreaterThanOrEqual(1);
    expect(failed?.findingCodes.length).toBeGreaterThanOrEqual(1);
    expect(report.drills.rto.worstMs).toBe(Math.max(passed?.rtoMs ?? 0, failed?.rtoMs ?? 0));
    expect(report.drills.rto.overObjective).toBe(0);

    // The day began before the first snapshot: no backup until it completed, a breach.
    expect(report.rpo.withoutBackup).toEqual({
      from: `${day}T00:00:00.000Z`,
      to: snapCompletedAt.toISOString(),
    });
    expect(report.rpo.met).toBe(false);
    expect(report.rpo.breaches[0]).toEqual({
      from: `${day}T00:00:00.000Z`,
      to: snapCompletedAt.toISOString(),
      worstSeconds: null,
    });
    expect(report.rpo.completions).toBe(1);

    expect(report.holds).toMatchObject({ placed: 2, released: 1, activeAtEnd: 1, cases: 2 });
    expect(
      report.holds.selectors.map((h) => [h.caseId, h.placedBy, h.releasedBy, h.activeAtEnd]),
    ).toEqual([
      ['CASE-A', 'legal-ann', 'legal-bob', false],
      ['CASE-B', 'legal-ann', null, true],
    ]);

    expect(report.erasures).toMatchObject({
      requested: 2,
      approved: 1,
      executed: 1,
      openAtEnd: 1,
      certificatesValid: 1,
      certificatesInvalid: 0,
    });
    const executed = report.erasures.requests.find((r) => r.id === executedId);
    expect(executed).toMatchObject({
      statusAtEnd: 'executed',
      requestedBy: 'dpo-dan',
      approvedBy: 'dpo-eve',
      daysOpen: 0,
    });
    expect(executed?.certificate).toEqual({
      object: `certificates/${executedId}.json`,
      signatureValid: true,
      problem: null,
      keyId: certificate.signature.keyId,
      signature: certificate.signature.value,
      executedAt: certificate.executedAt,
      keysDestroyed: 1,
      keysAbsent: 0,
      cellsAffected: certificate.cellsAffected.count,
      snapshotsAffected: 1,
      irreversibleAt: certificate.graceWindow.irreversibleAt,
      auditChain: certificate.auditChain,
    });
    expect(report.erasures.requests.find((r) => r.id === pendingId)).toMatchObject({
      statusAtEnd: 'pending',
      approvedBy: null,
      certificate: null,
    });

    expect(report.keysDestroyed).toMatchObject({
      count: 1,
      byCause: { retention: 0, erasure: 1, 'hold-release': 0, unknown: 0 },
    });
    expect(report.keysDestroyed.keys).toEqual([
      expect.objectContaining({
        keyId: erasedKey,
        cause: 'erasure',
        causeDetail: `deletion request ${executedId} (user)`,
        auditSeq: certificate.keysDestroyed[0]?.auditSeq,
      }),
    ]);

    const head = await vault.auditHead();
    expect(report.auditChain).toMatchObject({ ok: true, findings: [], anchors: 1, head });
    expect(report.auditChain.entries).toBe(head?.seq);
    const actions = Object.fromEntries(
      report.auditChain.inPeriod.byAction.map((a) => [a.action, a.count]),
    );
    expect(actions).toMatchObject({
      'backup.complete': 1,
      'verify.ok': 1,
      'verify.failed': 1,
      'key.destroy': 1,
    });
    expect(report.integrity).toEqual({ ok: true, problems: [] });
  });

  it('meets the RPO objective over a period that starts once the backup is complete', async () => {
    const { result, report } = await reportJson(
      '--from',
      snapCompletedAt.toISOString(),
      '--to',
      new Date().toISOString().slice(0, 10),
    );
    expectExit(result, 0);
    expect(report.rpo.withoutBackup).toBeNull();
    expect(report.rpo.met).toBe(true);
    expect(report.rpo.breaches).toEqual([]);
    // Measured up to the report: the newest snapshot's age then.
    const age = (Date.parse(report.rpo.measuredUntil) - snapStartedAt.getTime()) / 1000;
    expect(report.rpo.worstSeconds).toBe(Math.round(age));
    expect(report.backups.started).toBe(0);
  });

  it('verifies with jq and openssl as docs/evidence.md says, and fails when one byte changes', async () => {
    const { report } = await reportJson(
      '--from',
      day,
      '--to',
      new Date().toISOString().slice(0, 10),
    );
    const json = `${JSON.stringify(report, null, 2)}\n`;
    const dir = await auditorDir('stock', json);

    const keyId = await shell(await recipe('key id'), dir);
    expect(keyId.code).toBe(0);
    const [computed, named] = keyId.out.trim().split('\n');
    expect(computed).toBe(report.signature.keyId);
    expect(named).toBe(report.signature.keyId);

    for (const name of ['verify with jq', 'verify with python']) {
      const ok = await shell(await recipe(name), dir);
      expect(ok.out, name).toContain('Signature Verified Successfully');
      expect(ok.code, name).toBe(0);
    }

    // One byte of a fact changed: the drills' "failed" count, a letter of a key id, a digit of a time.
    const tampers: [string, string, string][] = [
      ['count', '"failed": 1,', '"failed": 0,'],
      [
        'key id',
        `"keyId": "${erasedKey}"`,
        `"keyId": "${erasedKey.replace(/.$/, (c) => (c === '1' ? '2' : '1'))}"`,
      ],
      [
        'time',
        `"generatedAt": "${report.generatedAt}"`,
        `"generatedAt": "${report.generatedAt.replace(/\d(?=Z$)/, (c) => String((Number(c) + 1) % 10))}"`,
      ],
    ];
    for (const [what, from, to] of tampers) {
      expect(json, what).toContain(from);
      expect(Buffer.byteLength(from)).toBe(Buffer.byteLength(to));
      const bad = await auditorDir(`tampered-${what.replace(' ', '-')}`, json.replace(from, to));
      for (const name of ['verify with jq', 'verify with python']) {
        const check = await shell(await recipe(name), bad);
        expect(check.code, `${what} / ${name}`).not.toBe(0);
        expect(check.out, `${what} / ${name}`).toContain('Signature Verification Failure');
      }
    }
    // Re-indenting changes no fact: it still verifies.
    const compact = await auditorDir('compact', JSON.stringify(report));
    expect((await shell(await recipe('verify with jq'), compact)).out).toContain(
      'Signature Verified Successfully',
    );
  });

  it('ties the report to the certificate, checked the same way', async () => {
    const { report } = await reportJson(
      '--from',
      day,
      '--to',
      new Date().toISOString().slice(0, 10),
    );
    const dir = await auditorDir('certificate', JSON.stringify(report));
    await mkdir(join(dir, 'certificates'));
    await copyFile(
      join(env.storePath ?? '', 'certificates', `${executedId}.json`),
      join(dir, 'certificates', `${executedId}.json`),
    );
    const script = (await recipe('certificate')).replaceAll('er-3k9x0q2m7h1c5v8z', executedId);
    const check = await shell(script, dir);
    expect(check.out).toContain('Signature Verified Successfully');
    expect(check.code).toBe(0);
    const lines = check.out.trim().split('\n');
    expect(lines.at(-1)).toBe(certificate.signature.value);
    expect(lines.at(-2)).toBe(certificate.signature.value);
  });

  it('writes a self-contained page and the signed JSON beside it, with no secrets', async () => {
    const out = join(work, 'html', 'evidence.html');
    await mkdir(join(work, 'html'));
    const result = await run(
      'report',
      '--from',
      day,
      '--to',
      new Date().toISOString().slice(0, 10),
      '--out',
      out,
    );
    expectExit(result, 0);
    expect(result.stdout).toMatch(
      /wrote .*evidence\.html and the signed JSON .*evidence\.json \(sha256 [0-9a-f]{64}\)/,
    );
    const html = await readFile(out, 'utf8');
    const json = await readFile(join(work, 'html', 'evidence.json'), 'utf8');
    const report = JSON.parse(json) as EvidenceReport;
    const vault = await env.rt.vault();
    expect(verifyReport(report, await vault.getSigningPublicKeys(['lifecycle']))).toEqual({
      ok: true,
    });

    // The page names the JSON's sha256 and embeds the same document.
    const { createHash } = await import('node:crypto');
    expect(html).toContain(createHash('sha256').update(json).digest('hex'));
    const extract = await shell(
      `sed -n 's|^<script type="application/json" id="${EMBED_ID}">\\(.*\\)</script>$|\\1|p' evidence.html`,
      join(work, 'html'),
    );
    expect(JSON.parse(extract.out)).toEqual(report);
    const embedded = await auditorDir('embedded', extract.out);
    expect((await shell(await recipe('verify with jq'), embedded)).out).toContain(
      'Signature Verified Successfully',
    );

    // What it shows.
    expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(html).toContain(snap.snapshotId);
    expect(html).toMatch(/class="badge bad">failed</);
    expect(html).toMatch(/class="badge ok">passed</);
    expect(html).toContain('CASE-B');
    expect(html).toContain(executedId);
    expect(html).toContain(
      `<code>certificates/${executedId}.json</code></td><td><span class="badge ok">valid</span>`,
    );
    // The page's own instructions work as printed (on the JSON beside it).
    const pre = /<pre>([\s\S]*?)<\/pre>/.exec(html)?.[1] ?? '';
    const steps = pre.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)));
    expect(steps).toContain('jq -jcS');
    const pageDir = join(work, 'html');
    await copyFile(
      join(env.dir, 'lifecycle-signing.key.pub'),
      join(pageDir, 'lifecycle-signing.key.pub'),
    );
    expect((await shell(steps, pageDir)).out).toContain('Signature Verified Successfully');
    // Free text is escaped, also inside the embedded JSON.
    expect(html).toContain('litigation B &#60;b&#62;&#38;');
    expect(html).not.toContain('litigation B <b>&');
    expect(html).toContain('litigation B \\u003cb\\u003e\\u0026');

    // Self-contained: no external resource, and no script that runs.
    expect(html).not.toMatch(/\b(src|href)\s*=/i);
    expect(html).not.toMatch(/<link|@import|url\(/i);
    expect([...html.matchAll(/<script\b[^>]*>/g)].map((m) => m[0])).toEqual([
      `<script type="application/json" id="${EMBED_ID}">`,
    ]);

    // No secrets: key files, the master key, database passwords.
    const secrets = [
      ...(await readFile(join(env.dir, 'lifecycle-signing.key'), 'utf8'))
        .split('\n')
        .filter((l) => l.length > 20 && !l.startsWith('-----')),
      ...(await readFile(join(env.dir, 'backup-signing.key'), 'utf8'))
        .split('\n')
        .filter((l) => l.length > 20 && !l.startsWith('-----')),
      ...(await readFile(env.masterKeyFile, 'utf8'))
        .split('\n')
        .filter((l) => l.startsWith('AGE-SECRET-KEY')),
      new URL(env.vaultDb.url).password,
    ].filter((s) => s !== '');
    expect(secrets.length).toBeGreaterThanOrEqual(3);
    for (const secret of secrets) {
      expect(html).not.toContain(secret);
      expect(json).not.toContain(secret);
    }
  });

  it('prints a readable summary by default', async () => {
    const result = await run(
      'report',
      '--from',
      day,
      '--to',
      new Date().toISOString().slice(0, 10),
    );
    expectExit(result, 0);
    expect(result.stdout).toMatch(/^lethe evidence report, \d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}/);
    expect(result.stdout).toMatch(/signed with lifecycle key ed25519-[0-9a-f]{16}: valid/);
    expect(result.stdout).toContain('integrity: OK');
    expect(result.stdout).toMatch(/Backups: 1 started: 1 complete/);
    expect(result.stdout).toMatch(
      /Restore drills: 2: 1 passed, 1 failed; RTO worst .*objective 2 h: all within/,
    );
    expect(result.stdout).toMatch(/FAILED .* 1 of \d+ cells failed/);
    expect(result.stdout).toMatch(
      /RPO, objective 24 h: BREACHED \(1 interval\); no complete backup for part of the period/,
    );
    expect(result.stdout).toMatch(
      /Legal holds: 2 placed, 1 released, 1 active at the end \(2 cases\)/,
    );
    expect(result.stdout).toMatch(
      /Deletion requests: 2 requested, 1 approved, 1 executed, 1 open at the end; certificates: 1 valid/,
    );
    expect(result.stdout).toContain(`certificate certificates/${executedId}.json: signature valid`);
    expect(result.stdout).toMatch(
      /Keys destroyed: 1: 0 by retention, 1 by erasure, 0 by hold release/,
    );
    expect(result.stdout).toMatch(
      /Audit chain: OK: \d+ entries, head entry \d+, hash [0-9a-f]{64}; checked against 1 certificate anchor/,
    );
    // Human output only: no log lines.
    expect(result.stdout + result.stderr).not.toMatch(/"level":/);
  });

  it('reports an empty period as empty', async () => {
    const { result, report } = await reportJson('--from', '2020-01-01', '--to', '2020-01-31');
    expectExit(result, 0);
    expect(report.backups.started).toBe(0);
    expect(report.drills.count).toBe(0);
    expect(report.holds.selectors).toEqual([]);
    expect(report.erasures.requests).toEqual([]);
    expect(report.keysDestroyed.count).toBe(0);
    expect(report.rpo.withoutBackup).toEqual({
      from: '2020-01-01T00:00:00.000Z',
      to: '2020-01-31T23:59:59.999Z',
    });
    expect(report.auditChain.inPeriod.entries).toBe(0);
    // The chain is still checked whole.
    expect(report.auditChain.ok).toBe(true);
    expect(report.auditChain.entries).toBeGreaterThan(0);
  });

  it('refuses bad dates and options with exit code 2, before touching the vault', async () => {
    const cases: [string[], RegExp][] = [
      [
        ['--from', '2026-02-30', '--to', '2026-03-01'],
        /--from "2026-02-30" is not a calendar date: use YYYY-MM-DD/,
      ],
      [
        ['--from', '2026-03-02', '--to', '2026-03-01'],
        /--from 2026-03-02 .* is after --to 2026-03-01/,
      ],
      [
        ['--from', '2026-03-01T10:00', '--to', '2026-03-02'],
        /--from "2026-03-01T10:00" is not a date/,
      ],
      [['--from', '2026-03-01'], /needs --to DATE/],
      [['--from', '2099-01-01', '--to', '2099-01-02'], /is in the future/],
      [
        ['--from', '2026-03-01', '--to', '2026-03-02', '--out', join(work, 'r.txt')],
        /--out .* must name an \.html file/,
      ],
      [
        ['--from', '2026-03-01', '--to', '2026-03-02', '--out', join(work, 'missing', 'r.html')],
        /cannot write to the directory of --out .*ENOENT/,
      ],
    ];
    for (const [args, message] of cases) {
      const result = await run('report', ...args);
      expectExit(result, 2);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).toMatch(/usage: lethe report|YYYY-MM-DD|earlier date|in the future/);
    }
    const json = await run('report', '--from', 'soon', '--to', '2026-03-01', '--json');
    expectExit(json, 2);
    expect(jsonOut(json)).toMatchObject({ error: { code: 'USAGE' } });
  });

  it('exits 3 and names the problem when the audit chain is broken or a certificate fails, still signing what it saw', async () => {
    const client = new pg.Client({ connectionString: env.vaultDb.url });
    await client.connect();
    const actor = (
      await client.query<{ actor: string }>('SELECT actor FROM lethe.audit_log WHERE seq = 2')
    ).rows[0]?.actor;
    try {
      await client.query('ALTER TABLE lethe.audit_log DISABLE TRIGGER USER');
      await client.query("UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 2");
      await client.query(
        `UPDATE lethe.erase_requests SET certificate = jsonb_set(certificate, '{request,reason}', '"edited"') WHERE id = $1`,
        [executedId],
      );
      const { result, report } = await reportJson(
        '--from',
        day,
        '--to',
        new Date().toISOString().slice(0, 10),
      );
      expectExit(result, 3);
      expect(report.integrity.ok).toBe(false);
      expect(report.integrity.problems).toEqual([
        'audit chain, entry 2: hash does not match the entry: the entry was modified after it was written',
        `certificate of ${executedId}: bad signature`,
      ]);
      expect(report.auditChain.ok).toBe(false);
      expect(report.erasures.certificatesInvalid).toBe(1);
      // Without a valid certificate there is no anchor.
      expect(report.auditChain.anchors).toBe(0);
      const vault = await env.rt.vault();
      expect(verifyReport(report, await vault.getSigningPublicKeys(['lifecycle']))).toEqual({
        ok: true,
      });
      const text = await run(
        'report',
        '--from',
        day,
        '--to',
        new Date().toISOString().slice(0, 10),
      );
      expectExit(text, 3);
      expect(text.stdout).toMatch(/integrity: PROBLEMS \(2\)\n {2}- audit chain, entry 2: /);
      expect(text.stdout).toMatch(/Audit chain: BROKEN/);
      expect(text.stdout).toMatch(/SIGNATURE INVALID \(bad signature\)/);
    } finally {
      await client
        .query('UPDATE lethe.audit_log SET actor = $1 WHERE seq = 2', [actor])
        .catch(() => undefined);
      await client.query('ALTER TABLE lethe.audit_log ENABLE TRIGGER USER').catch(() => undefined);
      await client
        .query('UPDATE lethe.erase_requests SET certificate = $2::jsonb WHERE id = $1', [
          executedId,
          JSON.stringify(certificate),
        ])
        .catch(() => undefined);
      await client.end();
    }
  });
});
