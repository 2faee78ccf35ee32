import type {
  StatusAudit,
  StatusDrill,
  StatusFailure,
  StatusHold,
  StatusModel,
  StatusPendingErasure,
  StatusSchedule,
  StatusScheduleRun,
  StatusSnapshot,
} from './status-model.ts';

/**
 * The daemon's status page (`GET /`): one self-contained HTML5 document rendered on the
 * server from a {@link StatusModel}. No JavaScript, no external resources, inline CSS only,
 * so it works under {@link STATUS_PAGE_CSP}; readable on a phone (tables become cards under
 * 600 px). Every value from the model is HTML-escaped by construction: the page is built
 * with the `markup` template tag below, which escapes each interpolation that is not itself
 * markup. (The tag is not called `html` so that Prettier leaves the templates as written.)
 */

/**
 * The Content-Security-Policy to serve the page with: nothing may load, only the page's
 * own inline `<style>` applies, and the page cannot be framed or post a form.
 */
export const STATUS_PAGE_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Options for {@link renderStatusPage}. */
export interface StatusPageOptions {
  /**
   * Ask the browser to reload the page every this many seconds (`<meta http-equiv=refresh>`,
   * no script). Off when absent; values below 5 are raised to 5.
   */
  readonly refreshSeconds?: number;
}

/** Why the page's banner says "attention". `kind` is stable; `message` is for people. */
export interface HealthProblem {
  readonly kind:
    | 'no_snapshot'
    | 'rpo_breached'
    | 'drill_failed'
    | 'rto_breached'
    | 'audit_chain_broken'
    | 'job_failed'
    | 'erase_request_overdue';
  readonly message: string;
}

/** The overall state the banner shows: ok when there is no problem. */
export interface StatusHealth {
  readonly ok: boolean;
  readonly problems: readonly HealthProblem[];
}

/**
 * How long a failure of a job that has no schedule (a run started from the CLI, say) keeps
 * the banner at "attention". A scheduled job's failure counts until a later run succeeds.
 */
const UNSCHEDULED_FAILURE_SECONDS = 24 * 3600;

/** Rows shown per list; the rest are counted in a note, so a huge list cannot bloat the page. */
const LIMITS = { snapshots: 60, drills: 30, failures: 30, holds: 300, erasures: 300 } as const;

/** Free text longer than this is cut (with an ellipsis) before it is escaped. */
const MAX_TEXT = 2000;

/**
 * Decides the banner: the problems an on-call engineer should look at, in the order shown.
 * Pure; `model.generatedAt` is "now".
 *
 * - no complete snapshot yet, or the RPO above its objective;
 * - the newest drill failed, or the RTO above its objective;
 * - the audit chain's last verification failed (never checked is not a problem here; the
 *   audit section says so);
 * - a job whose latest run failed: a failure counts until a later run of the same job
 *   (per `schedules[].last`) succeeded; for a job with no schedule, for 24 hours;
 * - deletion requests marked overdue.
 */
export function assessHealth(model: StatusModel): StatusHealth {
  const problems: HealthProblem[] = [];
  const { rpo, rto } = model;
  if (rpo.seconds === null && rpo.newestConsistentAt === null) {
    problems.push({
      kind: 'no_snapshot',
      message: 'No complete snapshot yet: nothing to restore.',
    });
  } else if (exceeds(rpo.seconds, rpo.objectiveSeconds)) {
    problems.push({
      kind: 'rpo_breached',
      message: `RPO breached: the newest restorable data is ${duration(rpo.seconds ?? 0)} old; the objective is ${duration(rpo.objectiveSeconds ?? 0)}.`,
    });
  }
  const lastDrill = model.drills[0];
  if (lastDrill !== undefined && !lastDrill.ok) {
    problems.push({
      kind: 'drill_failed',
      message: `The last restore drill failed: snapshot ${clip(lastDrill.snapshotId, 80)}, ${plural(lastDrill.findings, 'finding')}.`,
    });
  }
  if (exceeds(rto.seconds, rto.objectiveSeconds)) {
    problems.push({
      kind: 'rto_breached',
      message: `RTO over its objective: the last restore took ${duration(rto.seconds ?? 0)}; the objective is ${duration(rto.objectiveSeconds ?? 0)}.`,
    });
  }
  if (model.audit.ok === false) {
    problems.push({ kind: 'audit_chain_broken', message: 'The audit chain is broken.' });
  }
  for (const [job, what] of failingJobs(model)) {
    problems.push({ kind: 'job_failed', message: `${clip(job, 80)} ${what}` });
  }
  const overdue = model.pendingErasures.filter((e) => e.overdue);
  const unapproved = overdue.filter((e) => e.status !== 'approved').length;
  const unapplied = overdue.length - unapproved;
  const parts = [
    unapproved === 0
      ? null
      : `${plural(unapproved, 'deletion request')} overdue for a second approver`,
    unapplied === 0
      ? null
      : `${plural(unapplied, 'approved deletion request')} overdue for lifecycle apply`,
  ].filter((p) => p !== null);
  if (parts.length > 0)
    problems.push({ kind: 'erase_request_overdue', message: `${parts.join('; ')}.` });
  return { ok: problems.length === 0, problems };
}

/** Jobs whose latest run failed, each with a short description of that failure. */
function failingJobs(model: StatusModel): Map<string, string> {
  const now = model.generatedAt.getTime();
  const lastRun = new Map<string, StatusScheduleRun | null>();
  for (const s of model.schedules) lastRun.set(s.job, s.last);
  const failing = new Map<string, string>();
  for (const s of model.schedules) {
    if (s.last?.state === 'failed' && !failing.has(s.job)) {
      const code = s.last.code === null ? '' : ` (${clip(s.last.code, 80)})`;
      failing.set(s.job, `failed: its run for ${isoUtc(s.last.slot)}${code}.`);
    }
  }
  for (const f of model.failures) {
    if (failing.has(f.job)) continue;
    const at = f.at.getTime();
    const last = lastRun.get(f.job);
    let current: boolean;
    if (last === undefined) current = now - at <= UNSCHEDULED_FAILURE_SECONDS * 1000;
    else if (last === null) current = true;
    else current = !(last.state === 'ok' && (last.finishedAt ?? last.slot).getTime() > at);
    if (current)
      failing.set(f.job, `failed ${relative(f.at, model.generatedAt)} (${clip(f.code, 80)}).`);
  }
  return failing;
}

/**
 * Renders the whole page. Never throws on the model's content: invalid dates, non-finite
 * numbers and unknown time zones are shown as such. The page holds nothing but what the
 * model holds (and the model holds no secrets).
 */
export function renderStatusPage(model: StatusModel, options: StatusPageOptions = {}): string {
  const health = assessHealth(model);
  const now = model.generatedAt;
  const refresh =
    options.refreshSeconds === undefined || !Number.isFinite(options.refreshSeconds)
      ? null
      : Math.max(5, Math.round(options.refreshSeconds));
  const title = `${health.ok ? 'OK' : 'Attention'} · lethe · ${clip(model.instance, 80)}`;
  return markup`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
${refresh === null ? '' : markup`<meta http-equiv="refresh" content="${refresh}">\n`}<title>${title}</title>
<style>${raw(CSS)}</style>
</head>
<body>
<header>
<h1>lethe <span class="instance">${clip(model.instance, 200)}</span></h1>
<p class="meta">version <code>${clip(model.version, 80)}</code> · generated ${when(now, now)}</p>
</header>
${banner(health)}
<nav aria-label="Sections"><a href="#objectives">Objectives</a> <a href="#snapshots">Snapshots</a> <a href="#drills">Drills</a> <a href="#schedules">Schedules</a> <a href="#holds">Holds</a> <a href="#erasures">Deletion requests</a> <a href="#audit">Audit</a> <a href="#failures">Failures</a></nav>
<main>
${objectives(model)}
${snapshots(model.snapshots, now)}
${drills(model.drills, model.rto.objectiveSeconds, now)}
${schedules(model.schedules, now)}
${holds(model.holds, now)}
${erasures(model.pendingErasures, now)}
${audit(model.audit, now)}
${failures(model.failures, now)}
</main>
<footer>Times are UTC (ISO 8601) unless a schedule names its time zone. This page runs no scripts.</footer>
</body>
</html>
`.value;
}

function banner(health: StatusHealth): Markup {
  if (health.ok) {
    return markup`<section class="banner ok" data-testid="health" data-state="ok" role="status">
<p class="verdict"><strong>OK</strong> Backups are fresh, the last drill passed and nothing needs attention.</p>
</section>`;
  }
  const items = health.problems.map((p) => markup`<li data-problem="${p.kind}">${p.message}</li>`);
  return markup`<section class="banner attention" data-testid="health" data-state="attention" role="status">
<p class="verdict"><strong>Attention</strong> ${plural(health.problems.length, 'problem')}:</p>
<ul>${items}</ul>
</section>`;
}

function objectives(model: StatusModel): Markup {
  const { rpo, rto, audit: a } = model;
  const lastDrill = model.drills[0];
  const rpoState = exceeds(rpo.seconds, rpo.objectiveSeconds)
    ? 'breached'
    : isNum(rpo.seconds)
      ? 'met'
      : 'unknown';
  const rtoState = exceeds(rto.seconds, rto.objectiveSeconds)
    ? 'breached'
    : isNum(rto.seconds)
      ? 'met'
      : 'unknown';
  const drillTile =
    lastDrill === undefined
      ? markup`<div class="tile" data-testid="last-drill" data-state="none"><h3>Last drill</h3><p class="big">none yet</p></div>`
      : markup`<div class="tile ${lastDrill.ok ? 'good' : 'bad'}" data-testid="last-drill" data-state="${lastDrill.ok ? 'passed' : 'failed'}"><h3>Last drill</h3><p class="big">${lastDrill.ok ? 'passed' : 'failed'}</p><p>${when(lastDrill.startedAt, model.generatedAt)}</p></div>`;
  const auditState = a.ok === null ? 'unknown' : a.ok ? 'intact' : 'broken';
  return markup`<section id="objectives" aria-labelledby="objectives-h">
<h2 id="objectives-h">Objectives</h2>
<div class="tiles">
<div class="tile ${tone(rpoState)}" data-testid="rpo" data-state="${rpoState}">
<h3>RPO <span class="sub">age of the newest restorable data</span></h3>
<p class="big">${isNum(rpo.seconds) ? duration(rpo.seconds) : '—'}</p>
${gauge(rpo.seconds, rpo.objectiveSeconds)}
<p>objective ${isNum(rpo.objectiveSeconds) ? duration(rpo.objectiveSeconds) : 'not set'}${rpoState === 'breached' ? markup` · <strong class="flag">breached</strong>` : ''}</p>
<p>consistent point ${when(rpo.newestConsistentAt, model.generatedAt)}</p>
</div>
<div class="tile ${tone(rtoState)}" data-testid="rto" data-state="${rtoState}">
<h3>RTO <span class="sub">time the last restore drill took</span></h3>
<p class="big">${isNum(rto.seconds) ? duration(rto.seconds) : '—'}</p>
${gauge(rto.seconds, rto.objectiveSeconds)}
<p>objective ${isNum(rto.objectiveSeconds) ? duration(rto.objectiveSeconds) : 'not set'}${rtoState === 'breached' ? markup` · <strong class="flag">over</strong>` : ''}</p>
</div>
${drillTile}
<div class="tile ${a.ok === false ? 'bad' : a.ok === true ? 'good' : ''}"><h3>Audit chain</h3><p class="big">${auditState}</p></div>
<div class="tile"><h3>Active holds</h3><p class="big">${count(model.holds.length)}</p></div>
<div class="tile ${model.pendingErasures.some((e) => e.overdue) ? 'bad' : ''}"><h3>Deletion requests waiting</h3><p class="big">${count(model.pendingErasures.length)}</p></div>
</div>
</section>`;
}

/** A meter of a value against its objective: green under 75 %, amber to 100 %, red above. */
function gauge(value: number | null, objective: number | null): Markup {
  if (!isNum(value) || !isNum(objective) || objective <= 0) return markup``;
  const max = objective * 2;
  const shown = Math.min(Math.max(value, 0), max);
  return markup`<meter min="0" max="${max}" low="${objective * 0.75}" high="${objective}" optimum="0" value="${shown}">${percent(value / objective)} of the objective</meter>`;
}

function snapshots(list: readonly StatusSnapshot[], now: Date): Markup {
  const shown = list.slice(0, LIMITS.snapshots);
  const rows = shown.map((s) => {
    const state = tokenOf(s.state);
    const total = (s.cellsWritten ?? 0) + (s.cellsReused ?? 0);
    const reuse =
      isNum(s.cellsReused) && total > 0
        ? markup` <span class="sub">(${percent(s.cellsReused / total)})</span>`
        : '';
    return markup`<tr class="state-${state}" data-testid="snapshot" data-state="${state}">
<td data-label="Started">${when(s.startedAt, now)}</td>
<td data-label="State"><span class="badge ${badgeFor(state)}">${clip(s.state, 40)}</span></td>
<td data-label="Consistent at">${when(s.consistentAt, now)}</td>
<td data-label="Size" class="num">${bytes(s.plainBytes)} <span class="sub">plain</span><br>${bytes(s.storedBytes)} <span class="sub">stored</span></td>
<td data-label="Cells" class="num">${countOrDash(s.cellsWritten)} <span class="sub">written</span><br>${countOrDash(s.cellsReused)} <span class="sub">reused</span>${reuse}</td>
<td data-label="Duration" class="num">${isNum(s.durationSeconds) ? duration(s.durationSeconds) : '—'}</td>
<td data-label="Snapshot" class="wrap id"><code>${clip(s.id, 200)}</code></td>
</tr>`;
  });
  const body =
    shown.length === 0
      ? markup`<p class="empty">No snapshots yet.</p>`
      : table(
          ['Started', 'State', 'Consistent at', 'Size', 'Cells', 'Duration', 'Snapshot'],
          rows,
          'snapshots',
        );
  return markup`<section id="snapshots" aria-labelledby="snapshots-h">
<h2 id="snapshots-h">Snapshots <span class="sub">newest first</span></h2>
${body}
${more(list.length, shown.length, 'older snapshot')}
</section>`;
}

function drills(list: readonly StatusDrill[], rtoObjective: number | null, now: Date): Markup {
  const shown = list.slice(0, LIMITS.drills);
  const rows = shown.map((d) => {
    const result = d.ok ? 'passed' : 'failed';
    const slow = exceeds(d.rtoSeconds, rtoObjective);
    return markup`<tr class="${d.ok ? 'row-ok' : 'row-failed'}" data-testid="drill" data-state="${result}">
<td data-label="Result"><span class="badge ${d.ok ? 'good' : 'bad'}" data-testid="drill-result" data-state="${result}">${result}</span></td>
<td data-label="Started">${when(d.startedAt, now)}</td>
<td data-label="Snapshot" class="wrap id"><code>${clip(d.snapshotId, 200)}</code></td>
<td data-label="RTO" class="num">${isNum(d.rtoSeconds) ? duration(d.rtoSeconds) : '—'}${slow ? markup` <strong class="flag">over objective</strong>` : ''}</td>
<td data-label="RPO" class="num">${isNum(d.rpoSeconds) ? duration(d.rpoSeconds) : '—'}</td>
<td data-label="Findings" class="num">${countOrDash(d.findings)}</td>
<td data-label="Summary" class="text">${clip(d.summary, MAX_TEXT)}</td>
</tr>`;
  });
  const body =
    shown.length === 0
      ? markup`<p class="empty">No restore drill has run yet.</p>`
      : table(
          ['Result', 'Started', 'Snapshot', 'RTO', 'RPO', 'Findings', 'Summary'],
          rows,
          'drills',
        );
  return markup`<section id="drills" aria-labelledby="drills-h">
<h2 id="drills-h">Restore drills <span class="sub">newest first</span></h2>
${body}
${more(list.length, shown.length, 'older drill')}
</section>`;
}

function schedules(list: readonly StatusSchedule[], now: Date): Markup {
  const rows = list.map((s) => {
    const last = s.last;
    const lastCell =
      last === null
        ? markup`<span class="sub">never ran</span>`
        : markup`<span class="badge ${badgeFor(last.state)}">${last.state}</span> <span class="sub">slot</span> ${when(last.slot, now)}${
            last.finishedAt === null
              ? ''
              : markup`<br><span class="sub">finished</span> ${when(last.finishedAt, now)}`
          }${last.code === null ? '' : markup`<br><code>${clip(last.code, 80)}</code>`}`;
    return markup`<tr data-testid="schedule" data-state="${last === null ? 'never' : last.state}">
<td data-label="Job"><strong>${clip(s.job, 80)}</strong></td>
<td data-label="Schedule"><code>${clip(s.cron, 120)}</code> <span class="sub">${clip(s.timezone, 80)}</span></td>
<td data-label="Next run">${s.next === null ? markup`<span class="sub">none</span>` : zoned(s.next, s.timezone, now)}</td>
<td data-label="Last run">${lastCell}</td>
</tr>`;
  });
  const body =
    list.length === 0
      ? markup`<p class="empty">No job is scheduled: <code>daemon.schedules</code> in the config is empty.</p>`
      : table(['Job', 'Schedule', 'Next run', 'Last run'], rows, 'schedules');
  return markup`<section id="schedules" aria-labelledby="schedules-h">
<h2 id="schedules-h">Schedules</h2>
${body}
</section>`;
}

function holds(list: readonly StatusHold[], now: Date): Markup {
  const shown = list.slice(0, LIMITS.holds);
  const rows = shown.map(
    (h) => markup`<tr data-testid="hold">
<td data-label="Case" class="wrap"><strong>${clip(h.caseId, 200)}</strong></td>
<td data-label="Tenant" class="wrap">${clip(h.tenant, 200)}</td>
<td data-label="Scope" class="wrap">${clip(h.scope, 400)}</td>
<td data-label="Placed" class="wrap">${when(h.placedAt, now)}<br><span class="sub">by</span> ${clip(h.placedBy, 200)}</td>
<td data-label="Reason" class="text">${clip(h.reason, MAX_TEXT)}</td>
</tr>`,
  );
  const body =
    shown.length === 0
      ? markup`<p class="empty">No active holds.</p>`
      : table(['Case', 'Tenant', 'Scope', 'Placed', 'Reason'], rows, 'holds');
  return markup`<section id="holds" aria-labelledby="holds-h">
<h2 id="holds-h">Active legal holds</h2>
${body}
${more(list.length, shown.length, 'more hold')}
</section>`;
}

function erasures(list: readonly StatusPendingErasure[], now: Date): Markup {
  const shown = list.slice(0, LIMITS.erasures);
  const rows = shown.map(
    (
      e,
    ) => markup`<tr class="${e.overdue ? 'row-overdue' : 'row-waiting'}" data-testid="erasure" data-state="${e.overdue ? 'overdue' : 'waiting'}" data-waiting-for="${e.status === 'approved' ? 'apply' : 'approver'}">
<td data-label="Request" class="wrap"><code>${clip(e.id, 200)}</code></td>
<td data-label="Tenant" class="wrap">${e.tenant === null ? markup`<em>every tenant</em>` : clip(e.tenant, 200)}</td>
<td data-label="Scope" class="wrap">${clip(e.scope, 400)}</td>
<td data-label="Requested" class="wrap">${when(e.requestedAt, now)}<br><span class="sub">by</span> ${clip(e.requestedBy, 200)}</td>
<td data-label="Waiting for">${e.status === 'approved' ? 'lifecycle apply' : 'a second approver'}</td>
<td data-label="Waiting" class="num">${isNum(e.ageDays) ? plural(Math.floor(e.ageDays), 'day') : '—'}${
      e.overdue ? markup` <span class="badge bad">overdue</span>` : ''
    }</td>
</tr>`,
  );
  const body =
    shown.length === 0
      ? markup`<p class="empty">None waiting.</p>`
      : table(
          ['Request', 'Tenant', 'Scope', 'Requested', 'Waiting for', 'Waiting'],
          rows,
          'erasures',
        );
  return markup`<section id="erasures" aria-labelledby="erasures-h">
<h2 id="erasures-h">Deletion requests waiting <span class="sub">for a second approver, or approved and not yet carried out</span></h2>
${body}
${more(list.length, shown.length, 'more request')}
</section>`;
}

function audit(a: StatusAudit, now: Date): Markup {
  const state = a.ok === null ? 'unknown' : a.ok ? 'intact' : 'broken';
  const verdict =
    a.ok === null
      ? 'not verified yet'
      : a.ok
        ? 'every entry links to the one before it'
        : 'an entry does not link to the one before it: run lethe audit verify';
  return markup`<section id="audit" aria-labelledby="audit-h">
<h2 id="audit-h">Audit chain</h2>
<div class="card ${tone(a.ok === null ? 'unknown' : a.ok ? 'met' : 'breached')}" data-testid="audit" data-state="${state}">
<p><span class="badge ${a.ok === false ? 'bad' : a.ok === true ? 'good' : 'neutral'}">${state}</span> ${verdict}</p>
<p><span class="sub">checked</span> ${when(a.checkedAt, now)} · <span class="sub">entries</span> ${countOrDash(a.entries)}</p>
${a.message === null ? '' : markup`<p class="text">${clip(a.message, MAX_TEXT)}</p>`}
</div>
</section>`;
}

function failures(list: readonly StatusFailure[], now: Date): Markup {
  const shown = list.slice(0, LIMITS.failures);
  const rows = shown.map(
    (f) => markup`<tr class="row-failed" data-testid="failure">
<td data-label="When">${when(f.at, now)}</td>
<td data-label="Job"><strong>${clip(f.job, 80)}</strong></td>
<td data-label="Code"><code>${clip(f.code, 80)}</code></td>
<td data-label="Message" class="text">${clip(f.message, MAX_TEXT)}</td>
<td data-label="Fix" class="text">${f.fix === null ? markup`<span class="sub">—</span>` : clip(f.fix, MAX_TEXT)}</td>
</tr>`,
  );
  const body =
    shown.length === 0
      ? markup`<p class="empty">No failures recorded.</p>`
      : table(['When', 'Job', 'Code', 'Message', 'Fix'], rows, 'failures');
  return markup`<section id="failures" aria-labelledby="failures-h">
<h2 id="failures-h">Recent failures <span class="sub">newest first</span></h2>
${body}
${more(list.length, shown.length, 'older failure')}
</section>`;
}

function table(headings: readonly string[], rows: readonly Markup[], name: string): Markup {
  const head = headings.map((h) => markup`<th scope="col">${h}</th>`);
  return markup`<div class="scroll"><table class="rows" data-testid="${name}-table">
<thead><tr>${head}</tr></thead>
<tbody>
${rows}</tbody>
</table></div>`;
}

function more(total: number, shown: number, noun: string): Markup {
  return total > shown
    ? markup`<p class="sub">${plural(total - shown, noun)} not shown.</p>`
    : markup``;
}

function tone(state: 'met' | 'breached' | 'unknown'): string {
  return state === 'breached' ? 'bad' : state === 'met' ? 'good' : '';
}

// ---------------------------------------------------------------------------------------
// Formatting. Every function here accepts what a vault may hold (invalid dates, NaN) and
// returns text; none throws.

/** True when both are numbers and `value` is above `objective`. */
function exceeds(value: number | null, objective: number | null): boolean {
  return isNum(value) && isNum(objective) && value > objective;
}

/** `2026-03-05T04:00:00Z` (to the second), or `invalid date`. */
function isoUtc(d: Date): string {
  if (!Number.isFinite(d.getTime())) return 'invalid date';
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A `<time>` with the UTC ISO form and how long ago (or until) it is from `now`. */
function when(d: Date | null, now: Date): Markup {
  if (d === null) return markup`<span class="sub">—</span>`;
  if (!Number.isFinite(d.getTime())) return markup`<span class="sub">invalid date</span>`;
  const iso = isoUtc(d);
  return markup`<time datetime="${iso}">${iso}</time> <span class="rel">(${relative(d, now)})</span>`;
}

/** A time shown in a schedule's time zone, with its UTC offset, and how far it is from `now`. */
function zoned(d: Date, timeZone: string, now: Date): Markup {
  if (!Number.isFinite(d.getTime())) return markup`<span class="sub">invalid date</span>`;
  const local = isoInZone(d, timeZone);
  if (local === null) {
    return markup`${when(d, now)}<br><span class="sub">unknown time zone ${clip(timeZone, 80)}, shown in UTC</span>`;
  }
  const utc = isoUtc(d);
  return markup`<time datetime="${utc}" title="${utc}">${local}</time> <span class="rel">(${relative(d, now)})</span>`;
}

const zoneFormats = new Map<string, Intl.DateTimeFormat | null>();

/**
 * `d` in ISO 8601 as the wall clock of `timeZone` shows it, with that zone's offset
 * (`2026-03-05T05:00:00+01:00`; `Z` where the offset is zero), to the second. Null for a
 * time zone the runtime does not know, or an invalid date.
 */
export function isoInZone(d: Date, timeZone: string): string | null {
  let format = zoneFormats.get(timeZone);
  if (format === undefined) {
    try {
      format = new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
      });
    } catch {
      format = null;
    }
    // Zones come from a validated config, so the cache stays tiny; the bound is a guard.
    if (zoneFormats.size < 64) zoneFormats.set(timeZone, format);
  }
  if (format === null || !Number.isFinite(d.getTime())) return null;
  const part: Partial<Record<Intl.DateTimeFormatPartTypes, number>> = {};
  for (const p of format.formatToParts(d)) if (p.type !== 'literal') part[p.type] = Number(p.value);
  const { year, month, day, hour, minute, second } = part;
  if (year === undefined || month === undefined || day === undefined) return null;
  if (hour === undefined || minute === undefined || second === undefined) return null;
  const wall = Date.UTC(year, month - 1, day, hour, minute, second);
  const offsetMinutes = Math.round((wall - Math.floor(d.getTime() / 1000) * 1000) / 60_000);
  const abs = Math.abs(offsetMinutes);
  const offset =
    offsetMinutes === 0
      ? 'Z'
      : `${offsetMinutes < 0 ? '-' : '+'}${pad2(Math.floor(abs / 60))}:${pad2(abs % 60)}`;
  return `${String(year).padStart(4, '0')}-${pad2(month)}-${pad2(day)}T${pad2(hour)}:${pad2(minute)}:${pad2(second)}${offset}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** How far `d` is from `now`: `just now`, `12 min ago`, `3 h ago`, `in 2 d`. */
export function relative(d: Date, now: Date): string {
  const seconds = (now.getTime() - d.getTime()) / 1000;
  if (!Number.isFinite(seconds)) return 'unknown';
  const abs = Math.abs(seconds);
  if (abs < 45) return 'just now';
  const span =
    abs < 90 * 60
      ? `${Math.max(1, Math.round(abs / 60))} min`
      : abs < 48 * 3600
        ? `${Math.round(abs / 3600)} h`
        : `${Math.round(abs / 86400)} d`;
  return seconds >= 0 ? `${span} ago` : `in ${span}`;
}

/** A span of seconds for people: `4.2 s`, `45 s`, `12 min 5 s`, `2 h 03 min`, `3 d 4 h`. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 0) return `−${duration(-seconds)}`;
  if (seconds < 10) return `${(Math.round(seconds * 10) / 10).toString()} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 === 0 ? '' : ` ${s % 60} s`}`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad2(Math.floor((s % 3600) / 60))} min`;
  const h = Math.floor((s % 86400) / 3600);
  return `${Math.floor(s / 86400)} d${h === 0 ? '' : ` ${h} h`}`;
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** A byte count for people, in binary units: `512 B`, `12.3 MiB`, `1.50 GiB`; `—` for null or nonsense. */
export function bytes(n: number | null): string {
  if (!isNum(n) || n < 0) return '—';
  if (n < 1024) return `${Math.round(n)} B`;
  let value = n;
  let unit = 'B';
  for (const u of UNITS) {
    if (value < 1024) break;
    value /= 1024;
    unit = u;
  }
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${unit}`;
}

/** `1,234,567`. */
function count(n: number): string {
  return Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function countOrDash(n: number | null): string {
  return isNum(n) ? count(n) : '—';
}

function percent(ratio: number): string {
  return Number.isFinite(ratio) ? `${Math.round(ratio * 100)}%` : '—';
}

function plural(n: number, noun: string): string {
  return isNum(n) ? `${count(n)} ${noun}${n === 1 ? '' : 's'}` : `? ${noun}s`;
}

function isNum(n: number | null | undefined): n is number {
  return typeof n === 'number' && Number.isFinite(n);
}

/** A state as a class or attribute token: lower-case letters, digits and dashes only. */
function tokenOf(state: string): string {
  const t = state
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, 40);
  return t === '' ? 'unknown' : t;
}

function badgeFor(state: string): string {
  switch (state) {
    case 'ok':
    case 'complete':
    case 'passed':
      return 'good';
    case 'failed':
    case 'abandoned':
      return 'bad';
    case 'running':
      return 'busy';
    default:
      return 'neutral';
  }
}

/**
 * Cuts text to `max` UTF-16 units (not splitting a surrogate pair, adding `…`) and replaces
 * with U+FFFD the control characters, which HTML does not allow in text, and the explicit
 * bidirectional embeddings, overrides and isolates, with which a name such as
 * `mallory<U+202E>evil` would show as `mallorylive` (right-to-left text needs none of them).
 */
function clip(text: string, max: number): string {
  let t = text;
  if (t.length > max) {
    t = t.slice(0, max);
    if (/[\uD800-\uDBFF]$/.test(t)) t = t.slice(0, -1);
    t += '…';
  }
  return t.replace(UNSHOWABLE, '\uFFFD');
}

/** C0 and C1 controls but tab, line feed and carriage return; bidi embeddings, overrides, isolates. */
/* eslint-disable no-control-regex -- finding control characters is the point */
const UNSHOWABLE =
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]/g;
/* eslint-enable no-control-regex */

// ---------------------------------------------------------------------------------------
// Escaping by construction.

/** A fragment of markup built by {@link markup}; only these reach the page unescaped. */
class Markup {
  constructor(readonly value: string) {}
}

type Interpolation = Markup | string | number | readonly Markup[];

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for HTML content and for quoted attribute values (either quote). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

/**
 * Template tag: the literal parts are markup; every interpolation is escaped unless it is a
 * `Markup` fragment (or an array of them). Numbers are written as escaped text.
 */
function markup(strings: TemplateStringsArray, ...values: Interpolation[]): Markup {
  let out = strings[0] ?? '';
  values.forEach((v, i) => {
    if (v instanceof Markup) out += v.value;
    else if (typeof v === 'string') out += escapeHtml(v);
    else if (typeof v === 'number') out += escapeHtml(String(v));
    else out += v.map((m) => m.value).join('');
    out += strings[i + 1] ?? '';
  });
  return new Markup(out);
}

/** The style sheet, written in this file, passed through as is. */
function raw(text: string): Markup {
  return new Markup(text);
}

const CSS = `
:root{--bg:#fff;--fg:#1b1f24;--sub:#59636e;--line:#d1d9e0;--card:#f6f8fa;--good:#1a7f37;--good-bg:#dafbe1;--bad:#cf222e;--bad-bg:#ffebe9;--busy:#9a6700;--busy-bg:#fff8c5;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--sub:#9198a1;--line:#3d444d;--card:#151b23;--good:#3fb950;--good-bg:#12261e;--bad:#ff7b72;--bad-bg:#2d1214;--busy:#d29922;--busy-bg:#272115;--link:#4493f8}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0 auto;max-width:80rem;padding:1rem;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;overflow-wrap:break-word}
h1{font-size:1.4rem;margin:0}
h1 .instance{font-weight:400;color:var(--sub)}
h2{font-size:1.15rem;margin:1.75rem 0 .5rem;padding-bottom:.25rem;border-bottom:1px solid var(--line)}
h3{font-size:.85rem;margin:0;font-weight:600;color:var(--sub)}
.meta{margin:.25rem 0 1rem;color:var(--sub)}
.sub,.rel{color:var(--sub);font-weight:400}
code{font:.85em/1.3 ui-monospace,"DejaVu Sans Mono",monospace}
a{color:var(--link)}
nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem;margin:.75rem 0}
.banner{border-radius:.5rem;padding:.75rem 1rem;border:2px solid}
.banner.ok{border-color:var(--good);background:var(--good-bg)}
.banner.attention{border-color:var(--bad);background:var(--bad-bg)}
.banner p{margin:0}
.banner ul{margin:.4rem 0 0;padding-left:1.25rem}
.verdict strong{font-size:1.1rem;margin-right:.4rem}
.banner.ok .verdict strong{color:var(--good)}
.banner.attention .verdict strong{color:var(--bad)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.75rem}
.tile,.card{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--line);border-radius:.5rem;padding:.6rem .8rem;min-width:0}
.tile p,.card p{margin:.2rem 0}
.tile.good,.card.good{border-left-color:var(--good)}
.tile.bad,.card.bad{border-left-color:var(--bad)}
.big{font-size:1.35rem;font-weight:600}
.tile.bad .big{color:var(--bad)}
.flag{color:var(--bad)}
meter{width:100%;height:.8rem}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-weight:700;font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;border:1px solid;white-space:nowrap}
.badge.good{color:var(--good);background:var(--good-bg)}
.badge.bad{color:var(--bad);background:var(--bad-bg)}
.badge.busy{color:var(--busy);background:var(--busy-bg)}
.badge.neutral{color:var(--sub)}
.scroll{overflow-x:auto}
table.rows{border-collapse:collapse;width:100%}
table.rows th,table.rows td{text-align:left;vertical-align:top;padding:.4rem .5rem;border-bottom:1px solid var(--line);unicode-bidi:isolate}
table.rows th{font-size:.8rem;color:var(--sub);font-weight:600;white-space:nowrap}
table.rows td.num{white-space:nowrap}
table.rows td.text{min-width:14rem;overflow-wrap:anywhere}
table.rows td.wrap{min-width:9rem;overflow-wrap:anywhere}
table.rows td.id{min-width:12.5rem}
time,.rel{white-space:nowrap}
.tile time,.tile .rel{white-space:normal;font-size:.85rem}
tr.row-failed td:first-child,tr.row-overdue td:first-child{box-shadow:inset 4px 0 var(--bad)}
tr.row-overdue{background:var(--bad-bg)}
.empty{color:var(--sub)}
footer{margin:2rem 0 1rem;color:var(--sub);font-size:.85rem}
@media (max-width:600px){
body{padding:.75rem}
.scroll{overflow-x:visible}
table.rows,table.rows tbody,table.rows tr,table.rows td{display:block;width:auto}
table.rows thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
table.rows tr{border:1px solid var(--line);border-radius:.5rem;margin:.6rem 0;padding:.3rem .6rem}
table.rows tr.row-failed,table.rows tr.row-overdue{border-left:4px solid var(--bad)}
table.rows td{border:0;padding:.2rem 0 .2rem 7.5rem;position:relative;min-height:1.6rem}
table.rows td.num{white-space:normal}
table.rows td.text,table.rows td.wrap{min-width:0}
table.rows td::before{content:attr(data-label);position:absolute;left:0;top:.3rem;width:7rem;color:var(--sub);font-size:.8rem;font-weight:600}
tr.row-failed td:first-child,tr.row-overdue td:first-child{box-shadow:none}
}
`;
