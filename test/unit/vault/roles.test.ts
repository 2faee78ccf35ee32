import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { MIGRATIONS } from '../../../src/vault/migrations.ts';
import { VAULT_GRANTS, grantRuleViolations, type VaultObject } from '../../../src/vault/role-grants.ts';
import { checkRolePrefix, vaultRoleNames, vaultRolesScript, vaultRolesStatements } from '../../../src/vault/roles.ts';
import { checkRolePassword, scramSha256Verifier, scramVerifierAccepts } from '../../../src/vault/scram.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isLetheError(err) ? err.code : String(err);
  }
  return undefined;
}

/** VAULT_GRANTS with one entry replaced. */
function withEntry(name: string, change: (o: VaultObject) => VaultObject): Record<string, VaultObject> {
  const current = VAULT_GRANTS[name];
  if (current === undefined) throw new Error(`no ${name}`);
  return { ...VAULT_GRANTS, [name]: change(current) };
}

describe('the vault grant table', () => {
  it('obeys its rules', () => {
    expect(grantRuleViolations()).toEqual([]);
  });

  it('catches a backup role that could read a wrapped identity, or a sealed held key', () => {
    expect(grantRuleViolations(withEntry('dimension_keys', (o) => ({ ...o, access: { ...o.access, backup: { select: 'all' } } })))).toEqual([
      'dimension_keys: the backup role may read the secret column wrapped_identity',
    ]);
    expect(grantRuleViolations(withEntry('held_cell_keys', (o) => ({ ...o, access: { ...o.access, backup: { select: ['key_id', 'wrapped'] } } })))).toEqual([
      'held_cell_keys: the backup role may read the secret column wrapped',
    ]);
  });

  it('catches a verify role that could destroy keys or change decisions, and any audit rewrite', () => {
    expect(grantRuleViolations(withEntry('dimension_keys', (o) => ({ ...o, access: { ...o.access, verify: { select: 'all', update: ['wrapped_identity'] } } })))).toEqual([
      'dimension_keys: the verify role may update or delete in a key table',
    ]);
    expect(grantRuleViolations(withEntry('held_cell_keys', (o) => ({ ...o, access: { ...o.access, verify: { select: 'all', delete: true } } })))).toEqual([
      'held_cell_keys: the verify role may update or delete in a key table',
    ]);
    expect(grantRuleViolations(withEntry('holds', (o) => ({ ...o, access: { ...o.access, verify: { select: 'all', insert: 'all' } } })))).toEqual([
      'holds: the verify role may write a decision table',
    ]);
    expect(grantRuleViolations(withEntry('erase_requests', (o) => ({ ...o, access: { ...o.access, backup: { update: ['status'] } } })))).toEqual([
      'erase_requests: the backup role may write a decision table',
    ]);
    expect(grantRuleViolations(withEntry('audit_log', (o) => ({ ...o, access: { ...o.access, lifecycle: { select: 'all', delete: true } } })))).toEqual([
      'audit_log: the lifecycle role may update or delete the audit log',
    ]);
  });

  it('knows the tables of every migration (a migration that adds one must add its grants)', () => {
    const created = new Set<string>();
    for (const m of MIGRATIONS) {
      // In statement order: a migration may drop a table and create it (or a view) anew.
      for (const [, verb, name] of m.sql.matchAll(/(CREATE|DROP) (?:TABLE|VIEW) (\w+)/g)) {
        if (verb === 'CREATE') created.add(name ?? '');
        else created.delete(name ?? '');
      }
    }
    created.add('migrations');
    expect(Object.keys(VAULT_GRANTS).sort()).toEqual([...created].sort());
    for (const [name, object] of Object.entries(VAULT_GRANTS)) {
      const made = MIGRATIONS.filter((m) => new RegExp(`CREATE (TABLE|VIEW) ${name} `).test(m.sql)).map((m) => m.version);
      expect(object.since, name).toBe(name === 'migrations' ? 1 : Math.min(...made));
    }
  });
});

describe('role names', () => {
  it('default to the vault schema as prefix', () => {
    expect(vaultRoleNames({ schema: 'lethe' })).toEqual({
      owner: 'lethe_owner',
      backup: 'lethe_backup',
      verify: 'lethe_verify',
      lifecycle: 'lethe_lifecycle',
      daemon: 'lethe_daemon',
    });
    expect(vaultRoleNames({ schema: 'lethe', prefix: 'prod' }).backup).toBe('prod_backup');
  });

  it('refuse a prefix that is not a plain lower-case identifier or would be truncated', () => {
    for (const bad of ['', 'Lethe', 'a-b', 'x"; DROP ROLE y; --', '1abc', 'a'.repeat(54)]) {
      expect(codeOf(() => checkRolePrefix(bad)), bad).toBe(ErrorCode.USAGE);
    }
    expect(checkRolePrefix('a'.repeat(53))).toBe('a'.repeat(53));
  });
});

describe('the roles SQL', () => {
  const script = vaultRolesScript({ schema: 'lethe' });

  it('grants the backup role no wrapped identity, only the public columns and the insert of new keys', () => {
    const grants = script.split('\n').filter((l) => l.includes('"lethe"."dimension_keys"') && l.includes('GRANT'));
    expect(grants).toEqual([
      '  GRANT SELECT (id, kind, tenant, recipient, destroyed_at), INSERT (id, kind, tenant, recipient, wrapped_identity) ON TABLE "lethe"."dimension_keys" TO "lethe_backup";',
      // Columns later migrations added (master epochs, 11; ML-KEM public keys, 12), granted once they exist.
      '    GRANT SELECT ("master_epoch"), INSERT ("master_epoch") ON TABLE "lethe"."dimension_keys" TO "lethe_backup";',
      '    GRANT SELECT ("mlkem_public"), INSERT ("mlkem_public") ON TABLE "lethe"."dimension_keys" TO "lethe_backup";',
      '  GRANT SELECT ON TABLE "lethe"."dimension_keys" TO "lethe_verify";',
    ]);
    expect(script).toContain('ALTER TABLE "lethe"."dimension_keys" OWNER TO "lethe_lifecycle";');
    expect(script.split('\n').filter((l) => l.includes('held_cell_keys') && l.includes('lethe_backup') && l.includes('GRANT'))).toEqual([]);
  });

  it('is one transaction, guards each table by its existence, and names no password', () => {
    expect(script.match(/^BEGIN;$/gm)).toHaveLength(1);
    expect(script.match(/^COMMIT;$/gm)).toHaveLength(1);
    for (const name of Object.keys(VAULT_GRANTS)) expect(script).toContain(`IF to_regclass('"lethe"."${name}"') IS NULL THEN`);
    expect(script).not.toMatch(/PASSWORD\s+'/i);
    expect(script).toMatch(/CREATE ROLE "lethe_backup" NOLOGIN;/);
    const login = vaultRolesScript({ schema: 'lethe', login: true });
    expect(login).toMatch(/CREATE ROLE "lethe_backup" LOGIN;/);
    expect(login).toMatch(/ALTER ROLE "lethe_backup" LOGIN;/);
    expect(login).toContain('\\password lethe_backup');
  });

  it('is the statements --roles runs, with the prefix given', () => {
    const statements = vaultRolesStatements({ schema: 'vault2', prefix: 'p2' });
    for (const s of statements) expect(script.includes(s)).toBe(false);
    expect(statements.join('\n')).toContain('CREATE ROLE "p2_verify" NOLOGIN;');
    expect(statements.join('\n')).toContain('"vault2"."dimension_keys"');
    expect(statements.join('\n')).not.toContain('"lethe"');
    for (const s of vaultRolesStatements({ schema: 'lethe' })) expect(script).toContain(s);
  });
});

describe('SCRAM-SHA-256 verifiers', () => {
  // RFC 7677, section 3: user "user", password "pencil".
  const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
  const clientFirstBare = 'n=user,r=rOprNGfwEbeRWgbNEkqO';
  const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
  const clientFinalWithoutProof = 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
  const authMessage = `${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;

  it('holds the keys of the RFC 7677 example exchange', () => {
    const verifier = scramSha256Verifier('pencil', salt, 4096);
    const [, iterationsSalt, keys] = verifier.split('$');
    expect(iterationsSalt).toBe('4096:W22ZaJ0SNY7soEsUEjb6gQ==');
    const [storedKey, serverKey] = (keys ?? '').split(':').map((k) => Buffer.from(k, 'base64'));
    // The server's signature in the RFC is HMAC(ServerKey, AuthMessage).
    expect(createHmac('sha256', serverKey ?? Buffer.alloc(0)).update(authMessage).digest('base64')).toBe(
      '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
    );
    // The client's proof XOR HMAC(StoredKey, AuthMessage) is ClientKey, whose SHA-256 is StoredKey.
    const proof = Buffer.from('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', 'base64');
    const signature = createHmac('sha256', storedKey ?? Buffer.alloc(0)).update(authMessage).digest();
    const clientKey = Buffer.from(proof.map((b, i) => b ^ (signature[i] ?? 0)));
    expect(createHash('sha256').update(clientKey).digest().equals(storedKey ?? Buffer.alloc(0))).toBe(true);
  });

  it('accepts its own password and no other, with a fresh salt each time', () => {
    const a = scramSha256Verifier('correct horse battery staple');
    expect(a).not.toBe(scramSha256Verifier('correct horse battery staple'));
    expect(scramVerifierAccepts(a, 'correct horse battery staple')).toBe(true);
    expect(scramVerifierAccepts(a, 'correct horse battery stapl')).toBe(false);
    expect(scramVerifierAccepts('md5abcdef', 'x')).toBe(false);
    expect(scramVerifierAccepts(null, 'x')).toBe(false);
  });

  it('refuses short or non-ASCII passwords without echoing them', () => {
    const short = 'tooShort123';
    const err = (() => {
      try {
        checkRolePassword(short, 'lethe_backup', '/run/pw/backup');
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err?.message).toMatch(/lethe_backup.*shorter than 16/);
    expect(err?.message).not.toContain(short);
    expect(codeOf(() => checkRolePassword('pässwörd-pässwörd-1', 'r', 'f'))).toBe(ErrorCode.USAGE);
    expect(codeOf(() => checkRolePassword('a-perfectly-fine-password', 'r', 'f'))).toBeUndefined();
  });
});
