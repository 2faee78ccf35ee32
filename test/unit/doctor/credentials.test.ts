import { describe, expect, it } from 'vitest';
import { formatDoctorReport } from '../../../src/cli/cmd-doctor.ts';
import { check, judgeCredentials, type DoctorReport, type ProbeOutcome, type StorageOp } from '../../../src/doctor/index.ts';

function outcomes(allowed: readonly StorageOp[], denied: readonly StorageOp[]): ProbeOutcome[] {
  return [
    ...allowed.map((op) => ({ op, result: 'allowed' as const, detail: `${op} worked` })),
    ...denied.map((op) => ({ op, result: 'denied' as const, detail: `${op}: AccessDenied` })),
  ];
}

const where = 's3://backups/prod/';

describe('judgeCredentials', () => {
  it('passes backup credentials that can only write', () => {
    const checks = judgeCredentials({ name: 'storage', job: 'backup', where, kind: 's3' }, outcomes(['put'], ['list', 'get', 'delete']));
    expect(checks.map((c) => [c.id, c.status])).toEqual([
      ['storage.credentials.list', 'ok'],
      ['storage.credentials.put', 'ok'],
      ['storage.credentials.get', 'ok'],
      ['storage.credentials.delete', 'ok'],
    ]);
    expect(checks[2]?.detail).toBe('refused, as it should be: get: AccessDenied');
  });

  it('warns about backup credentials that can read or delete, naming the permission to remove', () => {
    const checks = judgeCredentials({ name: 'storage', job: 'backup', where, kind: 's3' }, outcomes(['list', 'put', 'get', 'delete'], []));
    const del = checks.find((c) => c.id === 'storage.credentials.delete');
    expect(del?.status).toBe('warn');
    expect(del?.fix).toBe('remove s3:DeleteObject from these credentials, so that stolen backup credentials cannot destroy backups');
    expect(checks.find((c) => c.id === 'storage.credentials.get')?.status).toBe('warn');
    // Listing is neither needed nor harmful for the backup.
    expect(checks.find((c) => c.id === 'storage.credentials.list')?.status).toBe('ok');
  });

  it('fails verify credentials that cannot read, naming the grant', () => {
    const checks = judgeCredentials({ name: 'storage', job: 'verify', where, kind: 's3' }, outcomes([], ['get', 'put', 'delete']));
    const get = checks.find((c) => c.id === 'storage.credentials.get');
    expect(get?.status).toBe('fail');
    expect(get?.fix).toBe('grant s3:GetObject on s3://backups/prod/*: the verify job needs it');
    expect(checks.filter((c) => c.status === 'fail')).toHaveLength(1);
  });

  it('needs everything from one set serving every job, and says what one set cannot show', () => {
    const checks = judgeCredentials({ name: 'storage', job: 'all', where, kind: 's3' }, [
      ...outcomes(['list', 'put', 'get'], ['delete']),
    ]);
    expect(checks.find((c) => c.id === 'storage.credentials.delete')).toMatchObject({ status: 'fail', fix: 'grant s3:DeleteObject on s3://backups/prod/*: the jobs need it' });
    expect(checks.find((c) => c.id === 'storage.credentials.scope')?.status).toBe('unknown');
  });

  it('reports what could not be probed as unknown, not as a finding', () => {
    const checks = judgeCredentials({ name: 'storage', job: 'verify', where, kind: 's3' }, [
      { op: 'put', result: 'unknown', detail: 'not probed: default retention' },
    ]);
    expect(checks.find((c) => c.id === 'storage.credentials.put')).toMatchObject({ status: 'unknown', detail: 'not probed: default retention' });
    expect(checks.find((c) => c.id === 'storage.credentials.get')).toMatchObject({ status: 'unknown', detail: 'not probed' });
  });
});

describe('formatDoctorReport', () => {
  it('prints a row per check and the fix under each finding', () => {
    const report: DoctorReport = {
      ok: false,
      findings: 1,
      jobs: ['all'],
      checks: [
        check('config', 'config', 'ok', 'lethe.yaml is valid'),
        check('masterKey.file', 'master key', 'fail', 'mode 0644', 'run `chmod 600 master.key`'),
        check('storage.versioning', 'bucket: versioning', 'unknown', 'NotImplemented', 'not shown'),
      ],
    };
    expect(formatDoctorReport(report, 'lethe.yaml')).toBe(
      [
        'lethe doctor: lethe.yaml (jobs: all)',
        '',
        'STATUS   CHECK               DETAIL',
        'ok       config              lethe.yaml is valid',
        'FAIL     master key          mode 0644',
        '                             fix: run `chmod 600 master.key`',
        'unknown  bucket: versioning  NotImplemented',
        '',
        '1 finding: 1 failed, 0 warnings (3 checks)',
      ].join('\n'),
    );
  });
});
