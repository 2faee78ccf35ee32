import type { StatusModel, StatusSnapshot } from '../../src/daemon/status-model.ts';

/**
 * Status-page models for tests: a healthy deployment, and one in trouble (failed drill,
 * breached RPO, overdue erasure, broken audit chain, a failed job) whose strings are
 * hostile, as a compromised vault could hold them.
 */

/** "Now" in every fixture. */
export const NOW = new Date('2026-03-05T10:00:00Z');

const HOUR = 3600;
const DAY = 24 * HOUR;

function ago(seconds: number): Date {
  return new Date(NOW.getTime() - seconds * 1000);
}

function later(seconds: number): Date {
  return new Date(NOW.getTime() + seconds * 1000);
}

/** Markup and script that must show as text, never act. */
export const HOSTILE_SCRIPT = '<script>alert("pwned")</script>';
/** Breaks out of a quoted attribute if quotes are not escaped. */
export const HOSTILE_ATTR = `"><img src=x onerror="alert(1)"><a href='javascript:alert(2)'>x</a>`;
/** Closes the page's own style element if `<` is not escaped. */
export const HOSTILE_STYLE = '</style><style>body{display:none}</style>';
/** One long word: overflows a phone's width unless the page wraps anywhere. */
export const LONG_WORD = `tenant-${'x'.repeat(300)}`;

/** Six-hourly complete snapshots, newest first, the newest started `newestAgo` seconds ago. */
function timeline(n: number, newestAgo: number): StatusSnapshot[] {
  return Array.from({ length: n }, (_, i): StatusSnapshot => {
    const started = ago(newestAgo + i * 6 * HOUR);
    const stamp = started
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}Z$/, 'Z');
    return {
      id: `${stamp}-${(0xa1b2c3 + i).toString(16)}`,
      state: 'complete',
      startedAt: started,
      completedAt: new Date(started.getTime() + 754_000),
      consistentAt: new Date(started.getTime() + 2_000),
      plainBytes: 3.2 * 1024 ** 3 + i * 10_000_000,
      storedBytes: i === n - 1 ? 1.1 * 1024 ** 3 : 48 * 1024 ** 2 + i * 1_000_000,
      cellsWritten: i === n - 1 ? 184_220 : 1_204 + i * 31,
      cellsReused: i === n - 1 ? 0 : 183_016 - i * 31,
      durationSeconds: i === n - 1 ? 1_874 : 754,
    };
  });
}

/** Every job scheduled, the last runs ok; next runs in Europe/Berlin. */
function schedules(): StatusModel['schedules'] {
  const run = (slotAgo: number) => ({
    slot: ago(slotAgo),
    state: 'ok' as const,
    finishedAt: ago(slotAgo - 600),
    code: null,
  });
  return [
    {
      job: 'backup',
      cron: '0 */6 * * *',
      timezone: 'Europe/Berlin',
      next: later(2 * HOUR),
      last: run(4 * HOUR),
    },
    {
      job: 'verify',
      cron: '30 2 * * *',
      timezone: 'Europe/Berlin',
      next: later(15.5 * HOUR),
      last: run(8.5 * HOUR),
    },
    {
      job: 'verifyOlder',
      cron: '30 3 * * 0',
      timezone: 'Europe/Berlin',
      next: later(3.7 * DAY),
      last: run(3.3 * DAY),
    },
    {
      job: 'lifecycle',
      cron: '0 4 * * *',
      timezone: 'UTC',
      next: later(18 * HOUR),
      last: run(6 * HOUR),
    },
    {
      job: 'vaultBackup',
      cron: '15 4 * * *',
      timezone: 'UTC',
      next: later(18.25 * HOUR),
      last: null,
    },
  ];
}

/** A deployment where everything is fine: the banner must say OK. */
export function healthyModel(): StatusModel {
  const snaps = timeline(12, 4 * HOUR);
  const newest = snaps[0];
  if (newest === undefined) throw new Error('fixture: no snapshots');
  return {
    generatedAt: NOW,
    instance: 'prod-eu-1',
    version: '0.1.0',
    snapshots: snaps,
    drills: [
      {
        snapshotId: snaps[1]?.id ?? '',
        startedAt: ago(8.5 * HOUR),
        ok: true,
        rtoSeconds: 842,
        rpoSeconds: 2.6 * HOUR,
        findings: 0,
        summary: '184,220 cells restored, digests and row counts match the manifest.',
      },
      {
        snapshotId: snaps[5]?.id ?? '',
        startedAt: ago(3.3 * DAY),
        ok: true,
        rtoSeconds: 911,
        rpoSeconds: 1.1 * DAY,
        findings: 0,
        summary: 'Older snapshot drill: all cells restored.',
      },
    ],
    rpo: { seconds: 4 * HOUR - 2, objectiveSeconds: DAY, newestConsistentAt: newest.consistentAt },
    rto: { seconds: 842, objectiveSeconds: 2 * HOUR },
    schedules: schedules(),
    holds: [
      {
        caseId: 'CASE-42',
        tenant: '17',
        scope: 'user 17/4410',
        placedAt: ago(40 * DAY),
        placedBy: 'legal@example.com',
        reason: 'Litigation hold, matter 2026-117.',
      },
    ],
    pendingErasures: [
      {
        id: 'req-0193',
        tenant: '17',
        scope: 'user 17/9001',
        requestedAt: ago(2 * DAY),
        requestedBy: 'dpo@example.com',
        ageDays: 2,
        overdue: false,
      },
    ],
    audit: { ok: true, checkedAt: ago(6 * HOUR), entries: 48_311, message: null },
    failures: [
      {
        job: 'backup',
        at: ago(5 * DAY),
        code: 'STORAGE',
        message: 'Uploading pack packs/ab/cd: connection reset by the object store.',
        fix: 'Check the endpoint and credentials in storage.s3; the next run retries.',
      },
    ],
  };
}

/**
 * A deployment in trouble: the newest drill failed, the RPO is past its objective, an
 * erasure is overdue, the audit chain is broken, the last backup failed, and the strings
 * the vault returned are hostile.
 */
export function troubledModel(): StatusModel {
  const base = healthyModel();
  const snaps = timeline(10, 30 * HOUR);
  const newest = snaps[0];
  if (newest === undefined) throw new Error('fixture: no snapshots');
  const running: StatusSnapshot = {
    id: `20260305T094500Z-${HOSTILE_SCRIPT}`,
    state: 'running',
    startedAt: ago(15 * 60),
    completedAt: null,
    consistentAt: null,
    plainBytes: null,
    storedBytes: null,
    cellsWritten: 312,
    cellsReused: null,
    durationSeconds: null,
  };
  const abandoned: StatusSnapshot = {
    ...newest,
    id: '20260304T040000Z-dead01',
    state: 'abandoned',
    startedAt: ago(6 * HOUR),
    completedAt: null,
    consistentAt: null,
    storedBytes: 3 * 1024 ** 2,
    durationSeconds: 61,
  };
  return {
    ...base,
    instance: `prod ${HOSTILE_SCRIPT}`,
    snapshots: [running, abandoned, ...snaps],
    drills: [
      {
        snapshotId: newest.id,
        startedAt: ago(7.5 * HOUR),
        ok: false,
        rtoSeconds: 9_300,
        rpoSeconds: 31 * HOUR,
        findings: 3,
        summary: `3 cells failed their digest: ${HOSTILE_ATTR}`,
      },
      ...base.drills,
    ],
    rpo: { seconds: 30 * HOUR, objectiveSeconds: DAY, newestConsistentAt: newest.consistentAt },
    rto: { seconds: 9_300, objectiveSeconds: 2 * HOUR },
    schedules: base.schedules.map((s) =>
      s.job === 'backup'
        ? {
            ...s,
            last: {
              slot: ago(6 * HOUR),
              state: 'failed' as const,
              finishedAt: ago(5.9 * HOUR),
              code: 'STORAGE',
            },
          }
        : s,
    ),
    holds: [
      ...base.holds,
      {
        caseId: `CASE-${HOSTILE_ATTR}`,
        tenant: LONG_WORD,
        scope: `conversation 17/${HOSTILE_STYLE}`,
        placedAt: ago(3 * DAY),
        placedBy: 'mallory\u202Eevil\u0007',
        reason: `Preserve for ${HOSTILE_SCRIPT} & <b>bold</b> claims`,
      },
    ],
    pendingErasures: [
      {
        id: 'req-0142',
        tenant: '23',
        scope: 'tenant 23',
        requestedAt: ago(11 * DAY),
        requestedBy: 'dpo@example.com',
        ageDays: 11.4,
        overdue: true,
      },
      ...base.pendingErasures,
      {
        id: 'req-0188',
        status: 'approved',
        tenant: '17',
        scope: 'conversation 17/551',
        requestedAt: ago(4 * DAY),
        requestedBy: 'dpo@example.com',
        ageDays: 4,
        overdue: false,
      },
    ],
    audit: {
      ok: false,
      checkedAt: ago(1 * HOUR),
      entries: 48_402,
      message: `Entry 48,390 does not link to entry 48,389 ${HOSTILE_SCRIPT}`,
    },
    failures: [
      {
        job: 'backup',
        at: ago(5.9 * HOUR),
        code: 'STORAGE',
        message: `PutObject packs/ef/01: AccessDenied ${HOSTILE_ATTR}`,
        fix: 'Give the backup credentials s3:PutObject on the bucket (see runbooks/restore-role.md).',
      },
      {
        job: 'verify',
        at: ago(7.4 * HOUR),
        code: 'INTEGRITY',
        message: '3 cells did not match their recorded digest.',
        fix: null,
      },
      ...base.failures,
    ],
  };
}
