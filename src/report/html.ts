import type { EvidenceReport } from './document.ts';
import { REPORT_FORMAT } from './document.ts';
import { bytesText, durationText, instantText, plural, secondsText } from './human.ts';
import { OBJECTIVES_FIELD } from './objectives.ts';
import { erasureSubject, holdSelectorText, rpoHeadline } from './text.ts';

/** Rows per table in the page; the signed JSON always has every row. */
export const HTML_ROWS = 1000;

/** The id of the `<script type="application/json">` element holding the signed report. */
export const EMBED_ID = 'lethe-evidence';

/**
 * The largest signed JSON the page embeds. Past it (a long period of a large deployment
 * destroys keys by the hundred thousand) the page would be too heavy for a phone; the JSON
 * beside it is then the only copy.
 */
export const EMBED_LIMIT_BYTES = 4 * 1024 * 1024;

export interface HtmlOptions {
  /** File name of the signed JSON written beside the page. */
  readonly jsonFile: string;
  /** Hex sha256 of that file's bytes. */
  readonly jsonSha256: string;
  /** The outcome of checking the signature against the vault's keys. */
  readonly signature: string;
}

/** Escapes text for HTML element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON that is safe inside a `<script>` element: `<`, `>` and `&` (and the two JavaScript
 * line separators) as `\u` escapes, so no text in the report can close the element. It
 * parses to the same value, so it verifies exactly as the file does.
 */
export function embeddableJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const e = escapeHtml;

function table(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  total: number,
): string {
  if (total === 0) return '<p class="none">none</p>';
  const head = headers.map((h) => `<th scope="col">${e(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('\n');
  const more =
    total > rows.length
      ? `<p class="more">… and ${total - rows.length} more in the signed JSON.</p>`
      : '';
  return `<div class="scroll"><table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table></div>${more}`;
}

const badge = (ok: boolean, yes: string, no: string): string =>
  `<span class="badge ${ok ? 'ok' : 'bad'}">${e(ok ? yes : no)}</span>`;
const code = (text: string): string => `<code>${e(text)}</code>`;
const when = (iso: string | null): string =>
  iso === null ? '–' : `<time datetime="${e(iso)}">${e(instantText(iso))}</time>`;
const num = (n: number | null): string => (n === null ? '–' : String(n));

function card(title: string, value: string, note: string, ok: boolean | null): string {
  const cls = ok === null ? '' : ok ? ' ok' : ' bad';
  return `<div class="card${cls}"><div class="k">${e(title)}</div><div class="v">${e(value)}</div><div class="n">${e(note)}</div></div>`;
}

const STYLE = `
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#57606a;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--card:#f6f8fa}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#8d96a0;--line:#30363d;--ok:#3fb950;--bad:#f85149;--card:#161b22}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0}
h2{font-size:1.15rem;margin:1.6rem 0 .4rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
p{margin:.4rem 0}
.meta{color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.6rem;margin:1rem 0}
.card{background:var(--card);border:1px solid var(--line);border-left-width:4px;border-radius:6px;padding:.5rem .7rem}
.card.ok{border-left-color:var(--ok)}.card.bad{border-left-color:var(--bad)}
.card .k{font-size:.8rem;color:var(--muted)}.card .v{font-size:1.3rem;font-weight:600}.card .n{font-size:.8rem;color:var(--muted)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
.wrap{display:inline-block;white-space:normal;min-width:12rem;max-width:30rem}
tbody tr:last-child td{border-bottom:0}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:.8rem;font-weight:600;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}
.none,.more{color:var(--muted);font-style:italic}
.problems li{color:var(--bad)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem;overflow-wrap:anywhere}
pre{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.6rem;overflow-x:auto;white-space:pre}
`;

/**
 * The report as one self-contained HTML page: inline CSS, no script that runs, no external
 * resource, readable on a phone. It is a rendering: what is signed is the JSON, which the
 * page embeds (`<script type="application/json" id="lethe-evidence">`) and names beside it
 * with its sha256; the page says how to check it.
 */
export function renderReportHtml(report: EvidenceReport, options: HtmlOptions): string {
  const p = report.period;
  const b = report.backups;
  const r = report.rpo;
  const d = report.drills;
  const h = report.holds;
  const x = report.erasures;
  const k = report.keysDestroyed;
  const a = report.auditChain;
  const title = `lethe evidence report ${p.asGiven.from} to ${p.asGiven.to}`;

  const cards = [
    card(
      'Backups',
      String(b.complete + b.expired),
      `${b.started} started, ${b.abandoned} abandoned`,
      b.abandoned === 0 && b.running === 0,
    ),
    card(
      'RPO',
      r.worstSeconds === null ? 'no backup' : secondsText(r.worstSeconds),
      r.objectiveSeconds === null
        ? 'worst; no objective set'
        : `worst; objective ${secondsText(r.objectiveSeconds)}`,
      r.met ?? (r.worstSeconds === null ? false : null),
    ),
    card(
      'Restore drills',
      `${d.passed} / ${d.count}`,
      d.failed === 0 ? 'passed' : `passed; ${d.failed} failed`,
      d.count === 0 ? null : d.failed === 0,
    ),
    card(
      'Legal holds',
      String(h.activeAtEnd),
      `active at the end; ${h.placed} placed, ${h.released} released`,
      null,
    ),
    card(
      'Deletion requests',
      String(x.executed),
      `executed; ${x.openAtEnd} open at the end`,
      x.certificatesInvalid === 0 ? null : false,
    ),
    card(
      'Keys destroyed',
      String(k.count),
      `${k.byCause.retention} retention, ${k.byCause.erasure} erasure, ${k.byCause['hold-release']} hold release`,
      null,
    ),
    card('Audit chain', a.ok ? 'intact' : 'BROKEN', plural(a.entries, 'entry', 'entries'), a.ok),
  ].join('\n');

  const problems = report.integrity.ok
    ? `<p>${badge(true, 'integrity OK', '')} The audit chain is intact and every certificate's signature verifies.</p>`
    : `<p>${badge(false, '', 'integrity problems')}</p><ul class="problems">${report.integrity.problems
        .slice(0, HTML_ROWS)
        .map((q) => `<li>${e(q)}</li>`)
        .join('')}</ul>`;

  const snapshots = table(
    [
      'snapshot',
      'state',
      'started',
      'completed',
      'duration',
      'read',
      'stored',
      'cells',
      'written',
      'reused',
    ],
    b.snapshots
      .slice(0, HTML_ROWS)
      .map((s) => [
        code(s.id),
        s.status === 'complete'
          ? badge(true, 'complete', '')
          : s.status === 'expired'
            ? e('expired')
            : badge(false, '', s.status),
        when(s.startedAt),
        when(s.completedAt),
        s.durationMs === null ? '–' : e(durationText(s.durationMs)),
        s.bytesPlain === null ? '–' : e(bytesText(s.bytesPlain)),
        s.bytesStored === null ? '–' : e(bytesText(s.bytesStored)),
        num(s.cells),
        num(s.cellsWritten),
        num(s.cellsReused),
      ]),
    b.snapshots.length,
  );

  const breaches =
    r.breaches.length === 0
      ? ''
      : table(
          ['over the objective from', 'to', 'worst'],
          r.breaches
            .slice(0, HTML_ROWS)
            .map((q) => [
              when(q.from),
              when(q.to),
              q.worstSeconds === null ? 'no backup' : e(secondsText(q.worstSeconds)),
            ]),
          r.breaches.length,
        );

  const drills = table(
    ['started', 'result', 'snapshot', 'RTO', 'RPO', 'cells', 'failed', 'findings'],
    d.drills
      .slice(0, HTML_ROWS)
      .map((q) => [
        when(q.startedAt),
        badge(q.ok, 'passed', 'failed'),
        code(q.snapshotId),
        e(durationText(q.rtoMs)) +
          (q.rtoWithinObjective === false ? ' ' + badge(false, '', 'over objective') : ''),
        q.rpoSeconds === null ? '–' : e(secondsText(q.rpoSeconds)),
        num(q.cells),
        num(q.cellsFailed),
        q.findings === 0 ? '0' : e(`${q.findings} (${q.findingCodes.join(', ')})`),
      ]),
    d.drills.length,
  );
  const rto = d.rto;
  const rtoLine =
    rto.worstMs === null
      ? ''
      : `<p>RTO: worst ${e(durationText(rto.worstMs))}, median ${e(durationText(rto.medianMs ?? 0))}; ` +
        (rto.objectiveSeconds === null
          ? `no objective (set ${code(`${OBJECTIVES_FIELD}.rtoMinutes`)}).</p>`
          : `objective ${e(secondsText(rto.objectiveSeconds))}: ${rto.overObjective === 0 ? 'every drill within it' : e(`${rto.overObjective ?? 0} over it`)}.</p>`);

  const holds = table(
    ['case', 'selector', 'placed', 'by', 'released', 'by', 'reason'],
    h.selectors
      .slice(0, HTML_ROWS)
      .map((q) => [
        code(q.caseId),
        `<span class="wrap">${e(holdSelectorText(q))}</span>`,
        when(q.placedAt),
        e(q.placedBy),
        q.releasedAt === null ? badge(true, 'active', '') : when(q.releasedAt),
        e(q.releasedBy ?? '–'),
        `<span class="wrap">${e(q.reason)}</span>`,
      ]),
    h.selectors.length,
  );

  const erasures = table(
    ['request', 'at the end', 'erase', 'requested', 'approved', 'executed', 'days', 'reason'],
    x.requests
      .slice(0, HTML_ROWS)
      .map((q) => [
        code(q.id),
        q.statusAtEnd === 'executed' ? badge(true, 'executed', '') : e(q.statusAtEnd),
        e(erasureSubject(q)),
        `${when(q.requestedAt)}<br>${e(q.requestedBy)}`,
        q.approvedAt === null ? '–' : `${when(q.approvedAt)}<br>${e(q.approvedBy ?? '?')}`,
        when(q.executedAt),
        String(q.daysOpen),
        `<span class="wrap">${e(q.reason)}</span>`,
      ]),
    x.requests.length,
  );
  const withCertificates = x.requests.flatMap((q) =>
    q.certificate === null ? [] : [{ id: q.id, c: q.certificate }],
  );
  const certificates =
    withCertificates.length === 0
      ? ''
      : table(
          [
            'certificate',
            'signature',
            'keys destroyed',
            'cell keys',
            'snapshots',
            'irreversible',
            'audit entry',
          ],
          withCertificates
            .slice(0, HTML_ROWS)
            .map(({ c }) => [
              code(c.object),
              c.signatureValid
                ? badge(true, 'valid', '')
                : `${badge(false, '', 'INVALID')} ${e(c.problem ?? '')}`,
              num(c.keysDestroyed),
              num(c.cellsAffected),
              num(c.snapshotsAffected),
              when(c.irreversibleAt),
              c.auditChain === null ? '–' : String(c.auditChain.seq),
            ]),
          withCertificates.length,
        );

  const keys = table(
    ['key', 'destroyed', 'cause', 'by', 'audit entry'],
    k.keys
      .slice(0, HTML_ROWS)
      .map((q) => [
        code(q.keyId),
        when(q.destroyedAt),
        e(q.causeDetail),
        e(q.actor),
        String(q.auditSeq),
      ]),
    k.keys.length,
  );

  const findings =
    a.findings.length === 0
      ? ''
      : `<ul class="problems">${a.findings
          .slice(0, HTML_ROWS)
          .map((f) => `<li>entry ${f.seq}: ${e(f.problem)}</li>`)
          .join('')}</ul>`;
  const actions =
    a.inPeriod.byAction.map((q) => `${code(q.action)} ${q.count}`).join(', ') || 'none';

  const file = options.jsonFile;
  const embedded = embeddableJson(report);
  const embed = Buffer.byteLength(embedded, 'utf8') <= EMBED_LIMIT_BYTES;
  const check = [
    `# 1. the signed bytes: the format line (${REPORT_FORMAT}), then the report without "signature" as canonical JSON`,
    `{ printf '%s\\n' "$(jq -r .format ${file})"; jq -jcS 'del(.signature)' ${file}; } > report.msg`,
    `# 2. the signature`,
    `jq -r .signature.value ${file} | base64 -d > report.sig`,
    `# 3. check it with the lifecycle public key your operator escrowed (lifecycle-signing.key.pub)`,
    `openssl pkeyutl -verify -pubin -inkey lifecycle-signing.key.pub -rawin -in report.msg -sigfile report.sig`,
  ].join('\n');

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${e(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1>${e(title)}</h1>
<p class="meta">Period ${when(p.from)} to ${when(p.to)} (both included, vault clock). Generated ${when(report.generatedAt)} by ${e(report.generatedBy)}; vault schema ${code(report.vault.schema)}.</p>
<p class="meta">Signed with the lifecycle key ${code(report.signature.keyId)} (${e(options.signature)}). The signature covers the JSON, not this page: ${code(file)} beside it, sha256 ${code(options.jsonSha256)}${embed ? ', also embedded in this page' : ' (too large to embed in this page)'}.</p>
${problems}
<div class="cards">
${cards}
</div>

<h2 id="backups">Backups taken</h2>
<p>${b.started} started: ${b.complete} complete, ${b.expired} expired since, ${b.abandoned} abandoned, ${b.running} running. ${e(bytesText(b.bytesPlain))} read, ${e(bytesText(b.bytesStored))} stored; cells ${b.cellsWritten} written, ${b.cellsReused} reused.</p>
${snapshots}

<h2 id="rpo">Recovery point (RPO)</h2>
<p>${e(rpoHeadline(report))}.</p>
${r.withoutBackup === null ? '' : `<p>${badge(false, '', 'no backup')} No complete backup from ${when(r.withoutBackup.from)} to ${when(r.withoutBackup.to)}.</p>`}
${breaches}
<p class="meta">${e(r.basis)}</p>

<h2 id="drills">Restore drills</h2>
<p>${e(plural(d.count, 'drill'))}: ${d.passed} passed, ${d.failed} failed.</p>
${rtoLine}
${drills}

<h2 id="holds">Legal holds</h2>
<p>${e(plural(h.placed, 'selector'))} placed, ${h.released} released, ${h.activeAtEnd} active at the end of the period (${e(plural(h.cases, 'case'))}).</p>
${holds}

<h2 id="erasures">Deletion requests and certificates</h2>
<p>${x.requested} requested, ${x.approved} approved, ${x.executed} executed, ${x.openAtEnd} open at the end of the period. Certificates: ${x.certificatesValid} valid${x.certificatesInvalid > 0 ? `, <strong>${x.certificatesInvalid} invalid</strong>` : ''}.</p>
${erasures}
${certificates}

<h2 id="keys">Keys destroyed</h2>
<p>${e(plural(k.count, 'key'))}: ${k.byCause.retention} by retention, ${k.byCause.erasure} by erasure, ${k.byCause['hold-release']} by hold release${k.byCause.unknown > 0 ? `, ${k.byCause.unknown} for another cause` : ''}.</p>
${keys}

<h2 id="audit">Audit chain</h2>
<p>${badge(a.ok, 'intact', 'BROKEN')} ${e(plural(a.entries, 'entry', 'entries'))} checked from the first; head ${a.head === null ? 'none' : `entry ${a.head.seq}, hash ${code(a.head.hash)}`}; checked against ${e(plural(a.anchors, 'certificate anchor'))}.</p>
${findings}
<p>${e(plural(a.inPeriod.entries, 'entry', 'entries'))} in the period${a.inPeriod.firstSeq === null ? '' : ` (${a.inPeriod.firstSeq} to ${a.inPeriod.lastSeq ?? '?'})`}: ${actions}.</p>

<h2 id="check">Checking this report</h2>
<p>With the lethe lifecycle public key from your operator's escrow (never one taken from the report or the bucket), bash, <code>jq</code> and OpenSSL 3:</p>
<pre>${e(check)}</pre>
<p class="meta">Expect <code>Signature Verified Successfully</code>. Every fact on this page is in the signed JSON; the page itself is not signed. docs/evidence.md in lethe explains each field.</p>
</main>
${embed ? `<script type="application/json" id="${EMBED_ID}">${embedded}</script>\n` : ''}</body>
</html>
`;
}
