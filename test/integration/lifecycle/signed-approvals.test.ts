import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  queryValue,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

const run = promisify(execFile);

/**
 * Signed approvals through the real CLI and the real OpenSSH `ssh-keygen`: people sign the
 * statements lethe prints with `ssh-keygen -Y sign -n lethe-approval`; lethe refuses the
 * requester's own key as approver, a changed statement, an unenrolled or revoked key, an
 * enrolment nobody enrolled signed, and a typed name; the destruction certificate's
 * signatures verify with `ssh-keygen -Y verify` in a shell, with no lethe code.
 */
describe('signed approvals (real ssh-keygen)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let tenant = '';
  let user = '';
  let requestId = '';
  const cli = (...args: string[]) => env.cli([...args, '--config', env.configPath]);

  /** A fresh ed25519 key pair for `name` in the test directory; returns the private key path. */
  async function keyFor(name: string): Promise<string> {
    const path = join(env.dir, `${name}_ed25519`);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@example`, '-f', path]);
    return path;
  }

  /** Signs `statement` with `key` exactly as a person would: a file, then ssh-keygen -Y sign. */
  async function sign(key: string, statement: string, label: string): Promise<string> {
    const file = join(env.dir, `${label}.txt`);
    await writeFile(file, statement);
    await run('ssh-keygen', ['-Y', 'sign', '-f', key, '-n', 'lethe-approval', file]);
    return `${file}.sig`;
  }

  /** The statement a command prints with --print-statement (exit 0). */
  async function statement(...args: string[]): Promise<string> {
    const out = await cli(...args, '--print-statement');
    expectExit(out, 0);
    return out.stdout;
  }

  let ann = '';
  let bob = '';
  let carl = '';
  let eve = '';

  beforeAll(async () => {
    template = await createChatTemplate('lc_signed_tpl');
    env = await createLetheEnv({ template: template.name, config: { approvals: { allowUnsigned: false } } });
    await initialize(env.rt, 'test');
    await backup(env.rt, { actor: 'test' });
    const pick = await queryValue<string>(
      env.chat.url,
      `SELECT c.tenant_id::text || '/' || m.sender_id::text AS v FROM public.messages m
         JOIN public.conversations c ON c.id = m.conversation_id
        GROUP BY c.tenant_id, m.sender_id ORDER BY count(*) DESC, 1 LIMIT 1`,
    );
    [tenant = '', user = ''] = pick.split('/');
    [ann, bob, carl, eve] = await Promise.all(['ann', 'bob', 'carl', 'eve'].map(keyFor)) as [string, string, string, string];
  }, 240_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('init enrols the first person; nobody else gets in without an enrolled signature', async () => {
    const first = await cli('init', '--enrol', 'ann', '--ssh-key', `${ann}.pub`, '--json');
    expectExit(first, 0);
    const annPrint = await run('ssh-keygen', ['-l', '-f', `${ann}.pub`]);
    const annFingerprint = annPrint.stdout.split(' ')[1];
    expect(jsonOut(first)).toMatchObject({ enrolled: { name: 'ann', fingerprint: annFingerprint, enrolledBy: null } });

    // A second first person: refused once someone is enrolled.
    const again = await cli('init', '--enrol', 'eve', '--ssh-key', `${eve}.pub`);
    expectExit(again, 3);
    expect(again.stderr).toMatch(/already has enrolled people/);

    // Eve signs her own enrolment: her key is not enrolled, so it proves nothing.
    const eveStatement = await statement('people', 'enrol', '--name', 'eve', '--ssh-key', `${eve}.pub`);
    expect(eveStatement).toMatch(/^lethe-approval v1\naction: people\.enrol\n/);
    const selfSigned = await cli('people', 'enrol', '--name', 'eve', '--ssh-key', `${eve}.pub`, '--signature', await sign(eve, eveStatement, 'eve-self'));
    expectExit(selfSigned, 3);
    expect(selfSigned.stderr).toMatch(/not enrolled in this vault/);
    const unsigned = await cli('people', 'enrol', '--name', 'eve', '--ssh-key', `${eve}.pub`);
    expectExit(unsigned, 2);
    expect(unsigned.stderr).toMatch(/must be signed/);
    // Ann's signature over a statement for another key does not enrol eve.
    const bobStatement = await statement('people', 'enrol', '--name', 'bob', '--ssh-key', `${bob}.pub`);
    const swapped = await cli('people', 'enrol', '--name', 'eve', '--ssh-key', `${eve}.pub`, '--signature', await sign(ann, bobStatement, 'ann-for-bob-0'));
    expectExit(swapped, 3);
    expect(swapped.stderr).toMatch(/does not match the statement/);

    const enrolBob = await cli('people', 'enrol', '--name', 'bob', '--ssh-key', `${bob}.pub`, '--signature', await sign(ann, bobStatement, 'ann-for-bob'), '--json');
    expectExit(enrolBob, 0);
    expect(jsonOut(enrolBob)).toMatchObject({ name: 'bob', enrolledBy: annFingerprint, active: true });
    const list = await cli('people', 'list', '--json');
    expect((jsonOut(list) as { people: { name: string }[] }).people.map((p) => p.name)).toEqual(['ann', 'bob']);
  });

  it('refuses a typed name where signatures are required', async () => {
    const typed = await cli('erase', 'request', '--tenant', tenant, '--user', user, '--reason', 'GDPR Art. 17 #9', '--actor', 'ann');
    expectExit(typed, 3);
    expect(typed.stderr).toMatch(/typed name, and this deployment requires signed approvals/);
    expect((jsonOut(await cli('erase', 'list', '--json')) as { requests: unknown[] }).requests).toEqual([]);
  });

  it('records a signed request under the enrolled name', async () => {
    const args = ['erase', 'request', '--tenant', tenant, '--user', user, '--reason', 'GDPR Art. 17 #9'];
    const text = await statement(...args);
    expect(text).toContain(`tenant: ${JSON.stringify(tenant)}\nscope: "user"\nsubject: ${JSON.stringify(user)}\nreason: "GDPR Art. 17 #9"\n`);
    const out = await cli(...args, '--signature', await sign(ann, text, 'request'), '--json');
    expectExit(out, 0);
    const request = jsonOut(out) as { id: string; requestedBy: string; requestedKey: string };
    expect(request.requestedBy).toBe('ann');
    expect(request.requestedKey).toMatch(/^SHA256:/);
    requestId = request.id;
  });

  it('refuses the requester\'s key, a changed statement and an unenrolled key as approver', async () => {
    const text = await statement('erase', 'approve', requestId);
    expect(text).toContain(`request: ${JSON.stringify(requestId)}\n`);

    const own = await cli('erase', 'approve', requestId, '--signature', await sign(ann, text, 'approve-ann'));
    expectExit(own, 3);
    expect(own.stderr).toMatch(/cannot also approve it \(two-person rule\)/);

    const changed = text.replace('GDPR Art. 17 #9', 'GDPR Art. 17 #10');
    expect(changed).not.toBe(text);
    const forged = await cli('erase', 'approve', requestId, '--signature', await sign(bob, changed, 'approve-changed'));
    expectExit(forged, 3);
    expect(forged.stderr).toMatch(/does not match the statement/);

    const stranger = await cli('erase', 'approve', requestId, '--signature', await sign(carl, text, 'approve-carl'));
    expectExit(stranger, 3);
    expect(stranger.stderr).toMatch(/not enrolled in this vault/);

    const notSig = await cli('erase', 'approve', requestId, '--signature', `${bob}.pub`);
    expectExit(notSig, 2);
    expect(notSig.stderr).toMatch(/not an SSH signature/);

    const still = jsonOut(await cli('erase', 'list', '--json')) as { requests: { id: string; status: string }[] };
    expect(still.requests.find((r) => r.id === requestId)?.status).toBe('pending');
  });

  it('executes on a second key; the certificate\'s signatures verify with stock ssh-keygen', async () => {
    const text = await statement('erase', 'approve', requestId);
    const approved = await cli('erase', 'approve', requestId, '--signature', await sign(bob, text, 'approve-bob'), '--json');
    expectExit(approved, 0);
    const key = (jsonOut(approved) as { certificateKey: string }).certificateKey;
    const certFile = join(env.storePath ?? '', key);
    const cert = JSON.parse(await readFile(certFile, 'utf8')) as { request: { requestedBy: string; approvedBy: string } };
    expect(cert.request).toMatchObject({ requestedBy: 'ann', approvedBy: 'bob' });

    // What an auditor runs: jq to take the fields apart, ssh-keygen to check them. No lethe code.
    const auditor = `
      set -eu
      cert="$1"; work="$2"; cd "$work"
      for act in request approval; do
        jq -r ".approvals.$act.allowedSigners" "$cert" > "$act.allowed_signers"
        jq -j ".approvals.$act.statement" "$cert" > "$act.statement"
        jq -r ".approvals.$act.sshSignature" "$cert" > "$act.sig"
        person=$(jq -r ".approvals.$act.person" "$cert")
        ssh-keygen -Y verify -f "$act.allowed_signers" -I "$person" -n lethe-approval -s "$act.sig" < "$act.statement"
      done
    `;
    const work = join(env.dir, 'auditor');
    await run('mkdir', ['-p', work]);
    const verified = await run('sh', ['-c', auditor, 'auditor', certFile, work]);
    expect(verified.stdout).toMatch(/Good "lethe-approval" signature for ann with ED25519 key SHA256:/);
    expect(verified.stdout).toMatch(/Good "lethe-approval" signature for bob with ED25519 key SHA256:/);

    // The same check fails on a statement changed by one character: it can fail.
    const stmt = await readFile(join(work, 'approval.statement'), 'utf8');
    await writeFile(join(work, 'approval.statement'), stmt.replace('"bob"', '"bot"').replace('#9', '#8'));
    await expect(
      run('sh', ['-c', 'ssh-keygen -Y verify -f approval.allowed_signers -I bob -n lethe-approval -s approval.sig < approval.statement', 'x'], { cwd: work }),
    ).rejects.toThrow(/Command failed/);

    const shown = await cli('erase', 'show', requestId);
    expectExit(shown, 0);
    expect(shown.stdout).toMatch(/requested by: ann .*signed by key SHA256:/);
  });

  it('holds: placed and released with signatures; a revoked key signs nothing', async () => {
    const place = ['hold', 'place', '--case', 'CASE-SIG', '--tenant', tenant, '--user', user, '--from', '2020-01-01', '--reason', 'litigation'];
    const placeText = await statement(...place);
    expect(placeText).toContain('from: "2020-01-01T00:00:00.000Z"\nto: null\n');
    const placed = await cli(...place, '--signature', await sign(bob, placeText, 'place'), '--json');
    expectExit(placed, 0);
    expect(jsonOut(placed)).toMatchObject({ caseId: 'CASE-SIG', placedBy: 'bob', active: true });

    // Enrol carl (by ann), then revoke him (by bob): his signature no longer counts.
    const carlEnrol = await statement('people', 'enrol', '--name', 'carl', '--ssh-key', `${carl}.pub`);
    expectExit(await cli('people', 'enrol', '--name', 'carl', '--ssh-key', `${carl}.pub`, '--signature', await sign(ann, carlEnrol, 'enrol-carl')), 0);
    const fingerprint = (await run('ssh-keygen', ['-l', '-f', `${carl}.pub`])).stdout.split(' ')[1] ?? '';
    const revokeText = await statement('people', 'revoke', '--fingerprint', fingerprint);
    expectExit(await cli('people', 'revoke', '--fingerprint', fingerprint, '--signature', await sign(bob, revokeText, 'revoke-carl')), 0);

    const release = ['hold', 'release', '--case', 'CASE-SIG', '--reason', 'settled'];
    const releaseText = await statement(...release);
    const revoked = await cli(...release, '--signature', await sign(carl, releaseText, 'release-carl'));
    expectExit(revoked, 3);
    expect(revoked.stderr).toMatch(/revoked at/);
    const typed = await cli(...release, '--actor', 'bob');
    expectExit(typed, 3);
    const released = await cli(...release, '--signature', await sign(ann, releaseText, 'release-ann'), '--json');
    expectExit(released, 0);
    expect((jsonOut(released) as { released: { releasedBy: string }[] }).released.map((h) => h.releasedBy)).toEqual(['ann']);
    const signers = await cli('people', 'list', '--allowed-signers');
    expect(signers.stdout.trim().split('\n')).toHaveLength(3);
    expectExit(await cli('audit', 'verify'), 0);
  });
});
