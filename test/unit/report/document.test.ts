import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, publicKeyToPem } from '../../../src/crypto/index.ts';
import { signerFromKey } from '../../../src/keys/index.ts';
import {
  EMBED_ID,
  EMBED_LIMIT_BYTES,
  REPORT_FORMAT,
  measureRpo,
  renderReportHtml,
  reportObjectives,
  reportText,
  signReport,
  verifyReport,
  type EvidenceReport,
  type UnsignedReport,
} from '../../../src/report/index.ts';

const exec = promisify(execFile);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Free text an operator may type: quotes, escapes, controls, non-ASCII, astral, markup. */
const TRICKY = [
  'plain',
  'quote " backslash \\ slash /',
  'tab\tnewline\ncarriage\rbell\u0007 nul\u0000 unit\u001f',
  'é ß 中文 😀 \u00ad soft hyphen, \ufeff bom, \u2028 line sep',
  '</script><script>alert(1)</script> & <b>',
];
const DEL = 'rub\u007fout';

function report(reason: string): UnsignedReport {
  const at = '2026-03-01T10:00:00.000Z';
  return {
    format: REPORT_FORMAT,
    period: {
      from: '2026-03-01T00:00:00.000Z',
      to: '2026-03-31T23:59:59.999Z',
      asGiven: { from: '2026-03-01', to: '2026-03-31' },
    },
    generatedAt: '2026-04-01T08:00:00.000Z',
    generatedBy: `auditor ${reason}`,
    vault: { schema: 'lethe' },
    objectives: { rpoSeconds: 86_400, rtoSeconds: null, source: 'daemon.objectives' },
    backups: {
      started: 1,
      complete: 1,
      expired: 0,
      abandoned: 0,
      running: 0,
      bytesPlain: 9_007_199_254_740_991,
      bytesStored: 0,
      cellsWritten: 1,
      cellsReused: 0,
      snapshots: [
        {
          id: '20260301T100000Z-abcdef',
          status: 'complete',
          startedAt: at,
          completedAt: at,
          expiredAt: null,
          durationMs: 1,
          bytesPlain: 1,
          bytesStored: 1,
          cells: 1,
          cellsWritten: 1,
          cellsReused: 0,
          rows: 1,
          fullRead: true,
        },
      ],
    },
    rpo: measureRpo(
      [{ id: 's', startedAt: new Date(at), completedAt: new Date(at) }],
      new Date('2026-03-01T00:00:00Z'),
      new Date('2026-03-31T23:59:59.999Z'),
      86_400,
    ),
    drills: {
      count: 0,
      passed: 0,
      failed: 0,
      rto: { objectiveSeconds: null, worstMs: null, medianMs: null, overObjective: null },
      drills: [],
    },
    holds: {
      placed: 1,
      released: 0,
      activeAtEnd: 1,
      cases: 1,
      selectors: [
        {
          id: 1,
          caseId: 'CASE-1',
          tenant: reason,
          user: null,
          conversation: null,
          from: null,
          to: null,
          reason,
          placedBy: reason,
          placedAt: at,
          releasedBy: null,
          releasedAt: null,
          placedInPeriod: true,
          releasedInPeriod: false,
          activeAtEnd: true,
        },
      ],
    },
    erasures: {
      requested: 0,
      approved: 0,
      executed: 0,
      openAtEnd: 0,
      certificatesValid: 0,
      certificatesInvalid: 0,
      requests: [],
    },
    keysDestroyed: {
      count: 0,
      byCause: { retention: 0, erasure: 0, 'hold-release': 0, unknown: 0 },
      keys: [],
    },
    auditChain: {
      ok: true,
      entries: 1,
      head: { seq: 1, hash: 'a'.repeat(64) },
      findings: [],
      anchors: 0,
      inPeriod: {
        entries: 1,
        firstSeq: 1,
        lastSeq: 1,
        byAction: [{ action: 'hold.place', count: 1 }],
      },
    },
    integrity: { ok: true, problems: [] },
  };
}

/** The shell recipe of docs/evidence.md whose first line is `# auditor: NAME`. */
async function recipe(name: string): Promise<string> {
  const doc = await readFile(join(REPO, 'docs', 'evidence.md'), 'utf8');
  for (const [, indent = '', body = ''] of doc.matchAll(/^( *)```sh\n([\s\S]*?)^ *```$/gm)) {
    const lines = body.split('\n').map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l));
    if (lines[0] === `# auditor: ${name}`) return lines.join('\n');
  }
  throw new Error(`no recipe ${name}`);
}

describe('evidence report document', () => {
  const key = generateSigningKey();
  const signer = signerFromKey(key, 'lifecycle');
  const keys = new Map([[signer.id, key.publicKey]]);
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-report-doc-'));
    await writeFile(join(dir, 'lifecycle-signing.key.pub'), publicKeyToPem(key.publicKey));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function stockCheck(name: string, doc: EvidenceReport): Promise<boolean> {
    await writeFile(join(dir, 'report.json'), JSON.stringify(doc, null, 2));
    try {
      const { stdout } = await exec('bash', ['-o', 'pipefail', '-c', await recipe(name)], {
        cwd: dir,
      });
      return stdout.includes('Signature Verified Successfully');
    } catch {
      return false;
    }
  }

  it('verifies, and refuses any change, another format, another key or no signature', () => {
    const signed = signReport(report('x'), signer);
    expect(verifyReport(signed, keys)).toEqual({ ok: true });
    expect(verifyReport({ ...signed, generatedBy: 'y' }, keys)).toEqual({
      ok: false,
      problem: 'bad signature',
    });
    expect(verifyReport({ ...signed, holds: { ...signed.holds, placed: 2 } }, keys)).toEqual({
      ok: false,
      problem: 'bad signature',
    });
    expect(
      verifyReport({ ...signed, format: 'lethe.destruction-certificate.v1' }, keys),
    ).toMatchObject({ ok: false, problem: /format is/ });
    expect(verifyReport(signed, new Map())).toEqual({
      ok: false,
      problem: `unknown signing key ${signer.id}`,
    });
    const { signature: _, ...unsigned } = signed;
    expect(verifyReport(unsigned, keys)).toEqual({ ok: false, problem: 'no signature' });
    expect(verifyReport([], keys)).toEqual({ ok: false, problem: 'not a JSON object' });
    // A certificate's signature is no report signature (the format line differs).
    const other = signerFromKey(key, 'lifecycle').sign(
      new TextEncoder().encode(`lethe.destruction-certificate.v1\n{}`),
    );
    expect(
      verifyReport({ ...signed, signature: { ...signed.signature, value: other } }, keys),
    ).toEqual({ ok: false, problem: 'bad signature' });
  });

  it('is rebuilt byte for byte by jq and by python for any free text, so openssl verifies it', async () => {
    for (const text of TRICKY) {
      const signed = signReport(report(text), signer);
      expect(await stockCheck('verify with jq', signed), `jq: ${JSON.stringify(text)}`).toBe(true);
      expect(
        await stockCheck('verify with python', signed),
        `python: ${JSON.stringify(text)}`,
      ).toBe(true);
    }
  });

  it('needs the python check for U+007F, as the doc says: jq escapes it', async () => {
    const signed = signReport(report(DEL), signer);
    expect(await stockCheck('verify with python', signed)).toBe(true);
    expect(await stockCheck('verify with jq', signed)).toBe(false);
  });

  it('renders a page where no text can become markup, embedding the document unchanged', () => {
    const signed = signReport(report(TRICKY[4] ?? ''), signer);
    const html = renderReportHtml(signed, {
      jsonFile: 'r.json',
      jsonSha256: 'f'.repeat(64),
      signature: 'valid',
    });
    expect([...html.matchAll(/<script\b[^>]*>/g)]).toHaveLength(1);
    expect(html).not.toContain('<b>');
    expect(html).toContain(
      '&#60;/script&#62;&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#60;b&#62;',
    );
    const embedded =
      new RegExp(`<script type="application/json" id="${EMBED_ID}">(.*)</script>`).exec(
        html,
      )?.[1] ?? '';
    expect(embedded).not.toMatch(/[<>&]/);
    expect(JSON.parse(embedded)).toEqual(signed);
    expect(verifyReport(JSON.parse(embedded), keys)).toEqual({ ok: true });
  });

  it('keeps the text form to a bounded number of rows per section', () => {
    const base = report('x');
    const [one] = base.holds.selectors;
    if (one === undefined) throw new Error('fixture: no selector');
    const many = signReport(
      {
        ...base,
        holds: {
          ...base.holds,
          selectors: Array.from({ length: 70 }, (_, i) => ({ ...one, id: i + 1 })),
        },
      },
      signer,
    );
    const lines = reportText(many, 'valid');
    expect(lines.filter((l) => l.startsWith('  CASE-1 '))).toHaveLength(50);
    expect(lines).toContain('  … and 20 more (--json or --out lists every one)');
  });

  it('leaves a report too large for a phone out of the page, and says so', () => {
    const base = report('x');
    const key = {
      keyId: 'period:1/messages/2025-01',
      destroyedAt: '2026-03-01T04:00:00.000Z',
      actor: 'lifecycle',
      reason: 'retention',
      cause: 'retention' as const,
      causeDetail: 'messages of 2025-01 past its 365d retention',
      auditSeq: 1,
    };
    const count = Math.ceil(EMBED_LIMIT_BYTES / JSON.stringify(key).length) + 10;
    const big = signReport(
      {
        ...base,
        keysDestroyed: {
          count,
          byCause: { retention: count, erasure: 0, 'hold-release': 0, unknown: 0 },
          keys: Array.from({ length: count }, (_, i) => ({ ...key, auditSeq: i + 1 })),
        },
      },
      signer,
    );
    const html = renderReportHtml(big, {
      jsonFile: 'r.json',
      jsonSha256: 'f'.repeat(64),
      signature: 'valid',
    });
    expect(html).not.toContain('<script');
    expect(html).toContain('(too large to embed in this page)');
    expect(html).toContain(`… and ${count - 1000} more in the signed JSON.`);
    expect(Buffer.byteLength(html)).toBeLessThan(1024 * 1024);
    const small = renderReportHtml(signReport(base, signer), {
      jsonFile: 'r.json',
      jsonSha256: 'f'.repeat(64),
      signature: 'valid',
    });
    expect(small).toContain(`<script type="application/json" id="${EMBED_ID}">`);
  });

  it('takes the objectives from daemon.objectives, in seconds, and none when absent', () => {
    expect(
      reportObjectives({ daemon: { objectives: { rpoMinutes: 1440, rtoMinutes: 90 } } }),
    ).toEqual({
      rpoSeconds: 86_400,
      rtoSeconds: 5400,
      source: 'daemon.objectives',
    });
    expect(reportObjectives({ daemon: { objectives: { rtoMinutes: 0.5 } } })).toEqual({
      rpoSeconds: null,
      rtoSeconds: 30,
      source: 'daemon.objectives',
    });
    for (const none of [
      {},
      { daemon: {} },
      { daemon: { objectives: {} } },
      null,
      { daemon: { objectives: { rpoMinutes: -1 } } },
    ]) {
      expect(reportObjectives(none)).toEqual({ rpoSeconds: null, rtoSeconds: null, source: null });
    }
  });
});
