import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { StatusModel } from '../../../src/daemon/status-model.ts';
import {
  assessHealth,
  bytes,
  duration,
  escapeHtml,
  isoInZone,
  relative,
  renderStatusPage,
} from '../../../src/daemon/status-page.ts';
import {
  HOSTILE_ATTR,
  HOSTILE_SCRIPT,
  HOSTILE_STYLE,
  healthyModel,
  NOW,
  troubledModel,
} from '../../helpers/status-fixtures.ts';

/**
 * The status page as a string: what it says for a healthy and a troubled deployment, that
 * every value from the model is escaped (including a property over arbitrary strings), that
 * it loads nothing, and the formatting of sizes, durations and zoned times.
 */

const VOID = new Set(['meta', 'br', 'link', 'img', 'input', 'hr']);

/**
 * The page's tags in order, checking that each one closes in order (the page closes every
 * element it opens); throws on the first mismatch.
 */
function tagsOf(html: string): string[] {
  const body = html.replace(/<style>[\s\S]*?<\/style>/, '<style></style>');
  const tags: string[] = [];
  const open: string[] = [];
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][a-zA-Z0-9]*)\b[^>]*>/g)) {
    const [, slash, rawName] = m;
    const name = (rawName ?? '').toLowerCase();
    tags.push(`${slash ?? ''}${name}`);
    if (VOID.has(name)) continue;
    if (slash === '') open.push(name);
    else if (open.pop() !== name)
      throw new Error(`</${name}> closes the wrong element at ${m.index}`);
  }
  if (open.length > 0) throw new Error(`unclosed: ${open.join(', ')}`);
  return tags;
}

/** The element with `data-testid="<id>"` (the first), from its start tag to its end tag. */
function element(html: string, testId: string, nth = 0): string {
  const starts = [...html.matchAll(new RegExp(`<(\\w+)[^>]*data-testid="${testId}"[^>]*>`, 'g'))];
  const start = starts[nth];
  if (start === undefined) throw new Error(`no element ${testId} #${nth}`);
  const name = start[1] ?? '';
  let depth = 0;
  const re = new RegExp(`<(/?)${name}\\b[^>]*>`, 'g');
  re.lastIndex = start.index;
  for (let m = re.exec(html); m !== null; m = re.exec(html)) {
    depth += m[1] === '/' ? -1 : 1;
    if (depth === 0) return html.slice(start.index, m.index + m[0].length);
  }
  throw new Error(`element ${testId} does not close`);
}

function attr(fragment: string, name: string): string | undefined {
  return new RegExp(`^<[^>]*\\b${name}="([^"]*)"`).exec(fragment)?.[1];
}

/** Visible text of a fragment: tags dropped, entities decoded, spaces collapsed. */
function text(fragment: string): string {
  return fragment
    .replace(/<[^>]*>/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();
}

describe('renderStatusPage: a healthy deployment', () => {
  const model = healthyModel();
  const html = renderStatusPage(model);

  it('is a complete HTML5 document for phones, every element closed', () => {
    expect(html.startsWith('<!doctype html>\n<html lang="en">')).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(html).toContain('@media (max-width:600px)');
    expect(tagsOf(html)).toContain('/html');
  });

  it('says OK and lists no problem', () => {
    expect(assessHealth(model)).toEqual({ ok: true, problems: [] });
    const banner = element(html, 'health');
    expect(attr(banner, 'data-state')).toBe('ok');
    expect(text(banner)).toMatch(/^OK /);
    expect(html).toContain('<title>OK · lethe · prod-eu-1</title>');
  });

  it('shows every snapshot with its size, cells and duration', () => {
    expect([...html.matchAll(/data-testid="snapshot"/g)]).toHaveLength(model.snapshots.length);
    const newest = element(html, 'snapshot');
    expect(text(newest)).toBe(
      '2026-03-05T06:00:00Z (4 h ago) complete 2026-03-05T06:00:02Z (4 h ago) ' +
        '3.20 GiB plain 48.0 MiB stored 1,204 written 183,016 reused (99%) 12 min 34 s ' +
        (model.snapshots[0]?.id ?? ''),
    );
    const oldest = element(html, 'snapshot', model.snapshots.length - 1);
    expect(text(oldest)).toContain('1.10 GiB stored 184,220 written 0 reused (0%) 31 min 14 s');
  });

  it('shows the drills passed, the RPO and RTO against their objectives', () => {
    expect(attr(element(html, 'drill-result'), 'data-state')).toBe('passed');
    expect(text(element(html, 'drill-result'))).toBe('passed');
    const rpo = element(html, 'rpo');
    expect(attr(rpo, 'data-state')).toBe('met');
    expect(text(rpo)).toContain('3 h 59 min');
    expect(text(rpo)).toContain('objective 1 d');
    expect(rpo).toMatch(
      /<meter min="0" max="172800" low="64800" high="86400" optimum="0" value="14398">/,
    );
    expect(attr(element(html, 'rto'), 'data-state')).toBe('met');
    expect(text(element(html, 'rto'))).toContain('14 min 2 s');
  });

  it("shows next runs in the schedule's time zone, and the last runs", () => {
    const backup = element(html, 'schedule');
    expect(text(backup)).toContain('2026-03-05T13:00:00+01:00 (in 2 h)');
    expect(backup).toContain('<time datetime="2026-03-05T12:00:00Z" title="2026-03-05T12:00:00Z">');
    const vaultBackup = element(html, 'schedule', 4);
    expect(attr(vaultBackup, 'data-state')).toBe('never');
    expect(text(vaultBackup)).toContain('2026-03-06T04:15:00Z (in 18 h)');
    expect(text(vaultBackup)).toContain('never ran');
  });

  it('shows holds, the waiting request, the audit chain and the last failure with its fix', () => {
    expect(text(element(html, 'hold'))).toContain('CASE-42 17 user 17/4410');
    const erasure = element(html, 'erasure');
    expect(attr(erasure, 'data-state')).toBe('waiting');
    expect(text(erasure)).toContain('2 days');
    expect(attr(element(html, 'audit'), 'data-state')).toBe('intact');
    expect(text(element(html, 'audit'))).toContain('entries 48,311');
    const failure = text(element(html, 'failure'));
    expect(failure).toContain('backup STORAGE Uploading pack packs/ab/cd');
    expect(failure).toContain('Check the endpoint and credentials in storage.s3');
  });

  it('loads nothing and runs nothing: no script, no external reference', () => {
    expect(html).not.toMatch(/<script|<link|<img|<iframe|src=|url\(|@import|javascript:/i);
    const hrefs = [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]);
    expect(hrefs.length).toBeGreaterThan(0);
    for (const href of hrefs) expect(href).toMatch(/^#[a-z]+$/);
  });
});

describe('renderStatusPage: a deployment in trouble, with hostile strings', () => {
  const model = troubledModel();
  const html = renderStatusPage(model);

  it('says attention, naming each problem in order', () => {
    const health = assessHealth(model);
    expect(health.ok).toBe(false);
    expect(health.problems.map((p) => p.kind)).toEqual([
      'rpo_breached',
      'drill_failed',
      'rto_breached',
      'audit_chain_broken',
      'job_failed',
      'job_failed',
      'erase_request_overdue',
    ]);
    const banner = element(html, 'health');
    expect(attr(banner, 'data-state')).toBe('attention');
    expect(text(banner)).toContain('Attention 7 problems:');
    expect(text(banner)).toContain(
      'RPO breached: the newest restorable data is 1 d 6 h old; the objective is 1 d.',
    );
    expect(text(banner)).toContain(
      'The last restore drill failed: snapshot 20260304T040000Z-a1b2c3, 3 findings.',
    );
    expect(text(banner)).toContain('backup failed: its run for 2026-03-05T04:00:00Z (STORAGE).');
    expect(text(banner)).toContain('1 deletion request overdue for a second approver.');
  });

  it('marks the failed drill as failed, by hook, class and text', () => {
    const row = element(html, 'drill');
    expect(attr(row, 'data-state')).toBe('failed');
    expect(attr(row, 'class')).toBe('row-failed');
    const result = element(html, 'drill-result');
    expect(attr(result, 'data-state')).toBe('failed');
    expect(attr(result, 'class')).toBe('badge bad');
    expect(text(result)).toBe('failed');
    expect(text(row)).toContain('2 h 35 min over objective');
    expect(attr(element(html, 'last-drill'), 'data-state')).toBe('failed');
    // The older drills still passed.
    expect(attr(element(html, 'drill', 1), 'data-state')).toBe('passed');
  });

  it('marks the breached RPO and the overdue request', () => {
    expect(attr(element(html, 'rpo'), 'data-state')).toBe('breached');
    expect(text(element(html, 'rpo'))).toContain('breached');
    const overdue = element(html, 'erasure');
    expect(attr(overdue, 'data-state')).toBe('overdue');
    expect(attr(overdue, 'class')).toBe('row-overdue');
    expect(text(overdue)).toContain('11 days overdue');
    expect(attr(element(html, 'erasure', 1), 'data-state')).toBe('waiting');
    expect(text(element(html, 'erasure'))).toContain('a second approver');
  });

  it('tells a request awaiting its second approver from an approved one awaiting lifecycle apply', () => {
    const approved = element(html, 'erasure', 2);
    expect(attr(approved, 'data-waiting-for')).toBe('apply');
    expect(text(approved)).toContain('conversation 17/551');
    expect(text(approved)).toContain('lifecycle apply 4 days');
    expect(attr(element(html, 'erasure'), 'data-waiting-for')).toBe('approver');
    const late = {
      ...model,
      pendingErasures: model.pendingErasures.map((e) => ({ ...e, overdue: true })),
    };
    expect(assessHealth(late).problems.at(-1)).toEqual({
      kind: 'erase_request_overdue',
      message:
        '2 deletion requests overdue for a second approver; 1 approved deletion request overdue for lifecycle apply.',
    });
  });

  it('shows running and abandoned snapshots as such', () => {
    expect(attr(element(html, 'snapshot'), 'data-state')).toBe('running');
    expect(attr(element(html, 'snapshot', 1), 'data-state')).toBe('abandoned');
    expect(text(element(html, 'snapshot'))).toContain('— plain — stored 312 written — reused');
  });

  it('shows hostile strings as text: no tag, attribute or style of theirs survives', () => {
    expect(html).not.toMatch(/<script|<img|<a href='|<b>|<\/style><style>|<[^>]*\son\w+=/i);
    expect(html.match(/<\/style>/g)).toHaveLength(1);
    expect(html).toContain(escapeHtml(HOSTILE_SCRIPT));
    expect(html).toContain(escapeHtml(HOSTILE_ATTR));
    expect(html).toContain(escapeHtml(HOSTILE_STYLE));
    expect(text(element(html, 'hold', 1))).toContain(
      `Preserve for ${HOSTILE_SCRIPT} & <b>bold</b> claims`,
    );
    // The same tags as a page whose strings are harmless.
    expect(tagsOf(html)).toEqual(tagsOf(renderStatusPage(blandStrings(model))));
  });

  it('replaces control characters and bidirectional overrides', () => {
    /* eslint-disable no-control-regex -- looking for control characters is the point */
    const unshowable =
      /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]/;
    /* eslint-enable no-control-regex */
    expect(html).not.toMatch(unshowable);
    expect(text(element(html, 'hold', 1))).toContain('mallory\uFFFDevil\uFFFD');
  });

  it('shows every failure with its code, message and fix', () => {
    const first = text(element(html, 'failure'));
    expect(first).toContain('backup STORAGE PutObject packs/ef/01: AccessDenied');
    expect(first).toContain('Give the backup credentials s3:PutObject on the bucket');
    expect(text(element(html, 'failure', 1))).toMatch(
      /verify INTEGRITY 3 cells did not match their recorded digest\. —$/,
    );
    expect(attr(element(html, 'audit'), 'data-state')).toBe('broken');
  });
});

describe('renderStatusPage: edge cases', () => {
  it('an empty deployment: no snapshot is a problem; every section says it is empty', () => {
    const model: StatusModel = {
      ...healthyModel(),
      snapshots: [],
      drills: [],
      rpo: { seconds: null, objectiveSeconds: 86400, newestConsistentAt: null },
      rto: { seconds: null, objectiveSeconds: null },
      schedules: [],
      holds: [],
      pendingErasures: [],
      audit: { ok: null, checkedAt: null, entries: null, message: null },
      failures: [],
    };
    expect(assessHealth(model).problems.map((p) => p.kind)).toEqual(['no_snapshot']);
    const html = renderStatusPage(model);
    for (const empty of [
      'No snapshots yet.',
      'No restore drill has run yet.',
      'No job is scheduled',
      'No active holds.',
      'None waiting.',
      'No failures recorded.',
      'not verified yet',
    ]) {
      expect(html).toContain(empty);
    }
    expect(attr(element(html, 'last-drill'), 'data-state')).toBe('none');
    expect(attr(element(html, 'rpo'), 'data-state')).toBe('unknown');
    expect(tagsOf(html).length).toBeGreaterThan(0);
  });

  it('never throws on invalid dates, non-finite numbers or an unknown time zone', () => {
    const bad = new Date(Number.NaN);
    const base = healthyModel();
    const model: StatusModel = {
      ...base,
      snapshots: [
        {
          ...(base.snapshots[0] as StatusModel['snapshots'][number]),
          startedAt: bad,
          plainBytes: Number.NaN,
          storedBytes: -1,
          durationSeconds: Infinity,
        },
      ],
      schedules: [
        { job: 'backup', cron: '0 * * * *', timezone: 'Mars/Olympus_Mons', next: NOW, last: null },
      ],
      holds: [{ ...(base.holds[0] as StatusModel['holds'][number]), placedAt: bad }],
    };
    const html = renderStatusPage(model);
    const snap = text(element(html, 'snapshot'));
    expect(snap).toMatch(/^invalid date complete/);
    expect(snap).toContain('— plain — stored');
    expect(text(element(html, 'schedule'))).toContain(
      '2026-03-05T10:00:00Z (just now) unknown time zone Mars/Olympus_Mons, shown in UTC',
    );
    expect(text(element(html, 'hold'))).toContain('invalid date');
  });

  it('a failure counts until a later run of its job succeeds; an unscheduled one for a day', () => {
    const base = healthyModel();
    const failure = (job: string, hoursAgo: number) => ({
      job,
      at: new Date(NOW.getTime() - hoursAgo * 3_600_000),
      code: 'STORAGE',
      message: 'm',
      fix: null,
    });
    const kinds = (failures: StatusModel['failures']) =>
      assessHealth({ ...base, failures }).problems.map((p) => p.message);
    // backup's last run (slot 4 h ago, finished 3 h 50 min ago) succeeded after a failure 5 h ago...
    expect(kinds([failure('backup', 5)])).toEqual([]);
    // ...but not after one 1 h ago.
    expect(kinds([failure('backup', 1)])).toEqual(['backup failed 60 min ago (STORAGE).']);
    // A job that never ran since its failure.
    expect(kinds([failure('vaultBackup', 30)])).toEqual(['vaultBackup failed 30 h ago (STORAGE).']);
    // No schedule: a day.
    expect(kinds([failure('restore', 23)])).toEqual(['restore failed 23 h ago (STORAGE).']);
    expect(kinds([failure('restore', 25)])).toEqual([]);
  });

  it('shows at most 60 snapshots and counts the rest', () => {
    const base = healthyModel();
    const one = base.snapshots[0] as StatusModel['snapshots'][number];
    const many = Array.from({ length: 100 }, (_, i) => ({ ...one, id: `s${i}` }));
    const html = renderStatusPage({ ...base, snapshots: many });
    expect([...html.matchAll(/data-testid="snapshot"/g)]).toHaveLength(60);
    expect(html).toContain('40 older snapshots not shown.');
  });

  it('cuts very long text', () => {
    const base = healthyModel();
    const hold = base.holds[0] as StatusModel['holds'][number];
    const html = renderStatusPage({ ...base, holds: [{ ...hold, reason: 'r'.repeat(100_000) }] });
    expect(html.length).toBeLessThan(renderStatusPage(base).length + 3_000);
    expect(html).toContain(`${'r'.repeat(2000)}…`);
  });

  it('asks for a refresh only when told, and not more often than every 5 s', () => {
    expect(renderStatusPage(healthyModel())).not.toContain('http-equiv="refresh"');
    expect(renderStatusPage(healthyModel(), { refreshSeconds: 60 })).toContain(
      '<meta http-equiv="refresh" content="60">',
    );
    expect(renderStatusPage(healthyModel(), { refreshSeconds: 0 })).toContain(
      '<meta http-equiv="refresh" content="5">',
    );
  });
});

/** The model with every string a page shows replaced by "x" (job names and zones kept). */
function blandStrings(model: StatusModel): StatusModel {
  return withStrings(model, () => 'x');
}

/**
 * The model with each string the page shows as text replaced by `next()`. Job names and time
 * zones stay: they select rows and formats, so they change the page's shape by design.
 */
function withStrings(model: StatusModel, next: () => string): StatusModel {
  return {
    ...model,
    instance: next(),
    version: next(),
    snapshots: model.snapshots.map((s) => ({ ...s, id: next(), state: next() })),
    drills: model.drills.map((d) => ({ ...d, snapshotId: next(), summary: next() })),
    schedules: model.schedules.map((s) => ({
      ...s,
      cron: next(),
      last: s.last === null ? null : { ...s.last, code: s.last.code === null ? null : next() },
    })),
    holds: model.holds.map((h) => ({
      ...h,
      caseId: next(),
      tenant: next(),
      scope: next(),
      placedBy: next(),
      reason: next(),
    })),
    pendingErasures: model.pendingErasures.map((e) => ({
      ...e,
      id: next(),
      tenant: next(),
      scope: next(),
      requestedBy: next(),
    })),
    audit: { ...model.audit, message: model.audit.message === null ? null : next() },
    failures: model.failures.map((f) => ({
      ...f,
      code: next(),
      message: next(),
      fix: f.fix === null ? null : next(),
    })),
  };
}

describe('escaping, as a property', () => {
  const hostile = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 60 }),
    fc.constantFrom(
      HOSTILE_SCRIPT,
      HOSTILE_ATTR,
      HOSTILE_STYLE,
      '<!--',
      ']]>',
      '&lt;',
      '"',
      "'",
      '</td></tr></table>',
    ),
  );

  it('no string in the model adds, removes or reorders a tag, or leaves its quotes', () => {
    const shape = (html: string) => ({ tags: tagsOf(html), quotes: html.replace(/[^"<>]/g, '') });
    for (const model of [healthyModel(), troubledModel()]) {
      const expected = shape(renderStatusPage(blandStrings(model)));
      fc.assert(
        fc.property(fc.array(hostile, { minLength: 80, maxLength: 80 }), (strings) => {
          let i = 0;
          const html = renderStatusPage(
            withStrings(model, () => strings[i++ % strings.length] ?? ''),
          );
          expect(shape(html)).toEqual(expected);
        }),
        { numRuns: 150 },
      );
    }
  });

  it('a hold reason of printable text appears exactly as given', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 200 }), (reason) => {
        const base = healthyModel();
        const hold = { ...(base.holds[0] as StatusModel['holds'][number]), reason };
        const html = renderStatusPage({ ...base, holds: [hold] });
        expect(text(element(html, 'hold'))).toContain(reason.replace(/\s+/g, ' ').trim());
      }),
    );
  });
});

describe('formatting', () => {
  it('sizes in binary units', () => {
    expect(
      [0, 1023, 1024, 1536, 10 * 1024 ** 2 + 1, 123.4 * 1024 ** 3, 2 * 1024 ** 5].map(bytes),
    ).toEqual(['0 B', '1023 B', '1.00 KiB', '1.50 KiB', '10.0 MiB', '123 GiB', '2.00 PiB']);
    expect([null, -1, Number.NaN].map(bytes)).toEqual(['—', '—', '—']);
  });

  it('durations', () => {
    expect([0.42, 9.96, 45, 60, 725, 3600, 7380, 86400, 90000, 183600].map(duration)).toEqual([
      '0.4 s',
      '10 s',
      '45 s',
      '1 min',
      '12 min 5 s',
      '1 h 00 min',
      '2 h 03 min',
      '1 d',
      '1 d 1 h',
      '2 d 3 h',
    ]);
  });

  it('relative times, past and future', () => {
    const at = (s: number) => new Date(NOW.getTime() - s * 1000);
    expect(
      [10, 60, 3000, 3 * 3600, 47 * 3600, 3 * 86400, -7200, -30].map((s) => relative(at(s), NOW)),
    ).toEqual([
      'just now',
      '1 min ago',
      '50 min ago',
      '3 h ago',
      '47 h ago',
      '3 d ago',
      'in 2 h',
      'just now',
    ]);
    expect(relative(new Date(Number.NaN), NOW)).toBe('unknown');
  });

  it('times in a zone, with its offset, across daylight saving time', () => {
    const winter = new Date('2026-01-15T12:00:00Z');
    const summer = new Date('2026-07-15T12:00:00Z');
    expect(isoInZone(winter, 'UTC')).toBe('2026-01-15T12:00:00Z');
    expect(isoInZone(winter, 'Europe/Berlin')).toBe('2026-01-15T13:00:00+01:00');
    expect(isoInZone(summer, 'Europe/Berlin')).toBe('2026-07-15T14:00:00+02:00');
    expect(isoInZone(winter, 'America/New_York')).toBe('2026-01-15T07:00:00-05:00');
    expect(isoInZone(summer, 'Asia/Kolkata')).toBe('2026-07-15T17:30:00+05:30');
    expect(isoInZone(new Date('2026-01-15T23:59:59.999Z'), 'Asia/Tokyo')).toBe(
      '2026-01-16T08:59:59+09:00',
    );
    // The last second before Berlin's clocks go forward, and the first after.
    expect(isoInZone(new Date('2026-03-29T00:59:59Z'), 'Europe/Berlin')).toBe(
      '2026-03-29T01:59:59+01:00',
    );
    expect(isoInZone(new Date('2026-03-29T01:00:00Z'), 'Europe/Berlin')).toBe(
      '2026-03-29T03:00:00+02:00',
    );
    expect(isoInZone(winter, 'Not/AZone')).toBeNull();
    expect(isoInZone(new Date(Number.NaN), 'UTC')).toBeNull();
  });
});
