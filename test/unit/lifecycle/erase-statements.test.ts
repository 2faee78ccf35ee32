import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySshSignature } from '../../../src/crypto/index.ts';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import { statementText } from '../../../src/lifecycle/approvals.ts';
import { approvalAct, requestAct } from '../../../src/lifecycle/erase.ts';
import { describeEraseTarget, shellWord } from '../../../src/lifecycle/erase-subject.ts';
import type { StoredEraseRequest } from '../../../src/vault/index.ts';

const run = promisify(execFile);
const VAULT = 'age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof LetheError ? err.code : `not a LetheError: ${String(err)}`;
  }
  return 'no error';
}

function stored(tenant: string | null): StoredEraseRequest {
  return {
    id: 'er-0123456789abcdef',
    tenant,
    scope: 'user',
    subject: '42',
    reason: 'GDPR Art. 17 #1',
    requestedBy: 'ann',
    requestedAt: new Date('2026-12-01T10:00:00Z'),
    status: 'pending',
    approvedBy: null,
    approvedAt: null,
    executedAt: null,
    certificate: null,
    requestProof: null,
    approvalProof: null,
  };
}

/**
 * A person across every tenant is a different act from the same person in one tenant: the
 * statements differ (`tenant: null` and `tenants: "all"`), so a signature a person made with
 * the real `ssh-keygen -Y sign` for a one-tenant request or approval never verifies for the
 * all-tenant one, and the reverse.
 */
describe('all-tenant erasure statements', () => {
  let dir = '';
  const sign = async (name: string, text: string): Promise<string> => {
    await writeFile(join(dir, name), text);
    await run('ssh-keygen', ['-Y', 'sign', '-f', join(dir, 'k'), '-n', 'lethe-approval', join(dir, name)], { timeout: 20_000 });
    return readFile(join(dir, `${name}.sig`), 'utf8');
  };
  const bytes = (text: string) => new TextEncoder().encode(text);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-erase-stmt-'));
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ann@example', '-f', join(dir, 'k')]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('spells the scope out in the signed text', () => {
    const all = statementText(VAULT, requestAct({ tenant: null, scope: 'user', subject: '42', reason: 'GDPR Art. 17 #1' }));
    expect(all).toBe(
      `lethe-approval v1\naction: erase.request\nvault: "${VAULT}"\ntenant: null\ntenants: "all"\nscope: "user"\nsubject: "42"\nreason: "GDPR Art. 17 #1"\n`,
    );
    const one = statementText(VAULT, requestAct({ tenant: '7', scope: 'user', subject: '42', reason: 'GDPR Art. 17 #1' }));
    expect(one).not.toContain('tenants:');
    expect(statementText(VAULT, approvalAct(stored(null)))).toContain('\ntenant: null\ntenants: "all"\nscope: "user"\n');
  });

  it('a one-tenant request signature does not sign the all-tenant request, nor the reverse', async () => {
    const one = statementText(VAULT, requestAct({ tenant: '7', scope: 'user', subject: '42', reason: 'GDPR Art. 17 #1' }));
    const all = statementText(VAULT, requestAct({ tenant: null, scope: 'user', subject: '42', reason: 'GDPR Art. 17 #1' }));
    const oneSig = await sign('one-request', one);
    expect(verifySshSignature(oneSig, bytes(one), 'lethe-approval').key.fingerprint).toMatch(/^SHA256:/);
    expect(codeOf(() => verifySshSignature(oneSig, bytes(all), 'lethe-approval'))).toBe(ErrorCode.REFUSED);
    const allSig = await sign('all-request', all);
    expect(codeOf(() => verifySshSignature(allSig, bytes(one), 'lethe-approval'))).toBe(ErrorCode.REFUSED);
  });

  it('an approval signed for a one-tenant request does not approve an all-tenant one with the same id', async () => {
    const one = statementText(VAULT, approvalAct(stored('7')));
    const all = statementText(VAULT, approvalAct(stored(null)));
    const oneSig = await sign('one-approve', one);
    expect(codeOf(() => verifySshSignature(oneSig, bytes(all), 'lethe-approval'))).toBe(ErrorCode.REFUSED);
  });

  it('describes the target in words and quotes ids for the commands lethe suggests', () => {
    expect(describeEraseTarget({ tenant: null, scope: 'user', subject: '42' })).toBe('user 42 in every tenant');
    expect(describeEraseTarget({ tenant: '7', scope: 'user', subject: '42' })).toBe('user 42 of tenant 7');
    expect(describeEraseTarget({ tenant: '7', scope: 'tenant', subject: null })).toBe('all of tenant 7');
    expect(shellWord('@bob:example.org')).toBe('@bob:example.org');
    expect(shellWord("o'neil; rm -rf x")).toBe("'o'\\''neil; rm -rf x'");
  });

  it('only a user can be erased across every tenant', () => {
    for (const scope of ['conversation', 'tenant'] as const) {
      expect(codeOf(() => requestAct({ tenant: null, scope, subject: scope === 'tenant' ? null : 'c1', reason: 'x' }))).toBe(ErrorCode.USAGE);
    }
  });
});
