import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeRecipient } from '../../../src/crypto/bech32.ts';
import { generateRawKeyPair } from '../../../src/crypto/keys.ts';
import { encodeDimensionSecret } from '../../../src/crypto/mlkem.ts';
import { EmbeddedPostgres } from '../../../src/embedded/postgres.ts';
import { currentWrapTarget, wrapDimensionSecret } from '../../../src/keys/master.ts';
import { ErrorCode } from '../../../src/errors/index.ts';
import { initialize } from '../../../src/jobs/tasks.ts';
import { verifyCertificate, type DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import { REFERENCE_SCHEMA_SQL } from '../../../src/store/index.ts';
import { freePort } from '../../../src/util/net.ts';
import { DurabilityCode, Vault, type DurabilityFinding } from '../../../src/vault/index.ts';
import { startExtraPostgres, type ExtraPostgres } from '../../helpers/extra-postgres.ts';
import { createLetheEnv, expectExit, jsonOut, type LetheEnv } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { migratedVault, rawSql, rejectsWith } from '../vault/fixture.ts';

/**
 * After a shred, the vault database's own copies of its WAL (archive, replicas, slots) may
 * still hold the destroyed key's wrapped form. lethe looks for them, records them in the
 * certificate and warns. A cluster of its own, started with `archive_mode=on`, is the
 * server under test (the shared one must stay plain, and a WAL receiver attached to it would
 * show up in other files' tests); `pg_receivewal` (Debian's postgresql-client) attaches to it
 * as a streaming client through the `host replication all 127.0.0.1/32` line initdb writes.
 */

/** In the archive command only, so that any leak of its text shows. */
const ARCHIVE_MARKER = 'lethe-test-archive-secret-7f3a';
const RECEIVER_NAME = 'lethe-test-receivewal';

function codes(findings: readonly DurabilityFinding[]): string[] {
  return findings.map((f) => f.code);
}

/** Waits until `check` resolves true, polling; throws `what` after `timeoutMs`. */
async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function receivers(adminUrl: string): Promise<number> {
  const { rows } = await rawSql(adminUrl, 'SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = $1', [RECEIVER_NAME]);
  return (rows[0] as { n: number }).n;
}

/**
 * Runs `pg_receivewal` against `cluster` as the superuser (password through PGPASSWORD, never
 * argv) until stop(), which waits until the server no longer lists it.
 */
async function startReceiver(cluster: ExtraPostgres): Promise<{ stop: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-receivewal-'));
  const child: ChildProcess = spawn(
    'pg_receivewal',
    ['-D', dir, '--no-password', '-d', `host=127.0.0.1 port=${cluster.port} user=postgres application_name=${RECEIVER_NAME}`],
    { env: { ...process.env, PGPASSWORD: cluster.password }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const adminUrl = cluster.url('postgres');
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    await waitFor(async () => (await receivers(adminUrl)) === 0, 'pg_receivewal to detach');
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`pg_receivewal exited with ${String(child.exitCode)}: ${stderr}`);
      return (await receivers(adminUrl)) === 1;
    }, 'pg_receivewal to stream');
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return { stop };
}

describe('vault durability: what the vault database keeps of destroyed keys', () => {
  let cluster: ExtraPostgres;
  let vaultUrl: string;
  let vault: Vault;
  let receiver: { stop: () => Promise<void> } | undefined;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    // /bin/true ignores its arguments: WAL "archives" to nowhere, and the marker is the secret.
    cluster = await startExtraPostgres(['archive_mode=on', `archive_command=/bin/true ${ARCHIVE_MARKER}`]);
    vaultUrl = await cluster.createDatabase('vault_direct');
    vault = new Vault(vaultUrl);
  }, 120_000);
  afterAll(async () => {
    await receiver?.stop();
    for (const c of cleanups.reverse()) await c();
    await vault.close();
    await cluster.stop();
  });

  it('finds WAL archiving, saying only whether archive_command is set, never its text', async () => {
    const findings = await vault.inspectDurability({ graceWindowDays: 7 });
    expect(codes(findings)).toEqual([DurabilityCode.WAL_ARCHIVE]);
    expect(findings[0]?.details).toEqual({ archiveMode: 'on', archiveCommand: 'set', archiveLibrary: 'not set' });
    expect(findings[0]?.message).toMatch(/archive_mode=on, archive_command set/);
    expect(findings[0]?.message).toMatch(/Keep the WAL archive's retention within the grace window \(retention\.graceWindowDays, 7 days\)/);
    expect(JSON.stringify(findings)).not.toMatch(new RegExp(`${ARCHIVE_MARKER}|/bin/true`));
  });

  it('finds an attached WAL receiver (pg_receivewal) and replication slots, and stops finding them when they go', async () => {
    receiver = await startReceiver(cluster);
    await rawSql(cluster.url('postgres'), `SELECT pg_create_physical_replication_slot('lethe_test_slot')`);
    try {
      const findings = await vault.inspectDurability({ graceWindowDays: 3 });
      expect(codes(findings)).toEqual([DurabilityCode.WAL_ARCHIVE, DurabilityCode.REPLICAS, DurabilityCode.REPLICATION_SLOTS]);
      const replicas = findings[1];
      expect(replicas?.details).toEqual({ clients: 1, applicationNames: [RECEIVER_NAME], states: ['streaming'], detailsHidden: false });
      expect(replicas?.message).toMatch(/^1 WAL streaming client is attached to the vault database's server \(pg_stat_replication: application_name lethe-test-receivewal; state streaming\)/);
      expect(replicas?.message).toMatch(/within the grace window \(retention\.graceWindowDays, 3 days\)/);
      expect(findings[2]?.details).toEqual({ slots: [{ name: 'lethe_test_slot', type: 'physical', active: false }] });
      expect(findings[2]?.message).toMatch(/drop slots nothing consumes \(inactive: lethe_test_slot\)/);
    } finally {
      await rawSql(cluster.url('postgres'), `SELECT pg_drop_replication_slot('lethe_test_slot')`);
      await receiver.stop();
      receiver = undefined;
    }
    expect(codes(await vault.inspectDurability({ graceWindowDays: 7 }))).toEqual([DurabilityCode.WAL_ARCHIVE]);
  }, 60_000);

  it('says what it could not check, and the grant that would let it, for a role that may not read it', async () => {
    const role = `lethe_plain_${randomBytes(3).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    const admin = cluster.url('postgres');
    await rawSql(admin, `CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    cleanups.push(async () => {
      await rawSql(admin, 'DROP DATABASE IF EXISTS vault_denied WITH (FORCE)');
      await rawSql(admin, 'DROP DATABASE IF EXISTS vault_denied_mode WITH (FORCE)');
      await rawSql(admin, `DROP ROLE IF EXISTS ${role}`);
    });
    const asRole = (database: string): string => {
      const url = new URL(cluster.url(database));
      url.username = role;
      url.password = password;
      return url.toString();
    };
    // Grants are per database: these revocations change nothing outside it. Some managed
    // services revoke the same; PostgreSQL itself hides slots and senders' details, not rows.
    const denied = await cluster.createDatabase('vault_denied');
    await rawSql(denied, 'REVOKE SELECT ON pg_catalog.pg_stat_replication, pg_catalog.pg_replication_slots FROM PUBLIC');
    await rawSql(denied, 'REVOKE EXECUTE ON FUNCTION pg_catalog.current_setting(text, boolean) FROM PUBLIC');
    const plain = new Vault(asRole('vault_denied'));
    try {
      const findings = await plain.inspectDurability({ graceWindowDays: 7 });
      expect(codes(findings)).toEqual([
        DurabilityCode.WAL_ARCHIVE,
        DurabilityCode.REPLICAS_UNCHECKED,
        DurabilityCode.REPLICATION_SLOTS_UNCHECKED,
      ]);
      const grant = `GRANT pg_monitor TO "${role}"`;
      expect(findings[0]?.details).toEqual({ archiveMode: 'on', archiveCommand: 'unknown', archiveLibrary: 'unknown', denied: expect.stringMatching(/permission denied/) as string, grant });
      expect(findings[1]?.details).toEqual({ view: 'pg_stat_replication', denied: 'permission denied for view pg_stat_replication', grant });
      expect(findings[1]?.message).toMatch(/could not be checked \(permission denied for view pg_stat_replication\): run `GRANT pg_monitor TO "lethe_plain_/);
      expect(findings[2]?.details).toEqual({ view: 'pg_replication_slots', denied: 'permission denied for view pg_replication_slots', grant });
    } finally {
      await plain.close();
    }
    const noMode = await cluster.createDatabase('vault_denied_mode');
    await rawSql(noMode, 'REVOKE EXECUTE ON FUNCTION pg_catalog.current_setting(text) FROM PUBLIC');
    const blind = new Vault(asRole('vault_denied_mode'));
    try {
      const findings = await blind.inspectDurability({ graceWindowDays: 7 });
      expect(codes(findings)).toEqual([DurabilityCode.WAL_ARCHIVE_UNCHECKED]);
      expect(findings[0]?.message).toMatch(/^Whether the vault database archives its WAL could not be checked \(permission denied for function current_setting\)/);
    } finally {
      await blind.close();
    }
  });

  it('throws DATABASE when the vault database cannot be reached', async () => {
    const nowhere = new Vault(`postgres://nobody:x@127.0.0.1:${await freePort()}/none`);
    try {
      const err = await rejectsWith(nowhere.inspectDurability({ graceWindowDays: 7 }), ErrorCode.DATABASE);
      expect(err.message).toMatch(/checking what the vault database keeps of destroyed keys/);
    } finally {
      await nowhere.close();
    }
  });

  it('finds no archiving, replica or slot on the plain shared test server', async () => {
    const db = await createTestDatabase('durability_plain');
    const fx = await migratedVault(db.url);
    try {
      const findings = await fx.vault.inspectDurability({ graceWindowDays: 7 });
      const kept = [DurabilityCode.WAL_ARCHIVE, DurabilityCode.REPLICAS, DurabilityCode.REPLICATION_SLOTS] as string[];
      expect(codes(findings).filter((c) => kept.includes(c))).toEqual([]);
      // The superuser can read everything: nothing is left unchecked either.
      expect(findings).toEqual([]);
    } finally {
      await fx.close();
      await db.drop();
    }
  });

  it('refuses embedded server settings that would move it off loopback', async () => {
    const start = EmbeddedPostgres.start({ dataDir: '/nonexistent', port: 1, password: 'x', settings: ['listen_addresses=*'] });
    const err = await rejectsWith(start, ErrorCode.EMBEDDED);
    expect(err.message).toMatch(/listen_addresses is fixed/);
    await rejectsWith(EmbeddedPostgres.start({ dataDir: '/nonexistent', port: 1, password: 'x', settings: ['-D/tmp'] }), ErrorCode.EMBEDDED);
  });

  describe('through the CLI', () => {
    let env: LetheEnv;
    const run = (...args: string[]) => env.cli([...args, '--config', env.configPath]);
    const request = async (user: string): Promise<string> => {
      const out = await run('erase', 'request', '--tenant', 't1', '--user', user, '--reason', 'GDPR Art. 17', '--actor', 'dpo-dan', '--json');
      expectExit(out, 0);
      return (jsonOut(out) as { id: string }).id;
    };

    beforeAll(async () => {
      const url = await cluster.createDatabase('lethe_vault');
      // The chat store is not read by erasure or apply; init checks the mapping against it,
      // so it holds the reference schema's empty tables.
      env = await createLetheEnv({ template: 'template0', config: { vault: { database: { url }, schema: 'lethe' } } });
      await rawSql(env.chat.url, REFERENCE_SCHEMA_SQL);
      await initialize(env.rt, 'test');
      const v = await env.rt.vault();
      // Real keys wrapped to the master as a backup makes them: lifecycle apply re-wraps the
      // survivors to a new master epoch after a shred, so it opens each one.
      const target = await currentWrapTarget(v, await v.getMasterRecipient());
      const keys = [];
      for (const u of ['alice', 'bob', 'carol', 'dave']) {
        const pair = generateRawKeyPair();
        const secret = Buffer.from(encodeDimensionSecret({ x25519: pair.privateKey, mlkemSeed: null }), 'utf8');
        keys.push({
          id: `user:t1/${u}`,
          kind: 'user' as const,
          tenant: 't1',
          recipient: encodeRecipient(pair.publicKey),
          wrappedIdentity: await wrapDimensionSecret(target, secret),
          ...(target.epoch === null ? {} : { masterEpoch: target.epoch }),
        });
      }
      await v.insertDimensionKeys(keys);
    }, 120_000);
    afterAll(async () => {
      await env.cleanup();
    });

    it('erase approve --json: vaultDurability and the certificate carry the archive finding', async () => {
      const id = await request('alice');
      const approve = await run('erase', 'approve', id, '--actor', 'dpo-eve', '--json');
      expectExit(approve, 0);
      const out = jsonOut(approve) as { certificate: DestructionCertificate; vaultDurability: DurabilityFinding[] };
      expect(codes(out.vaultDurability)).toEqual([DurabilityCode.WAL_ARCHIVE]);
      expect(out.vaultDurability[0]?.details).toEqual({ archiveMode: 'on', archiveCommand: 'set', archiveLibrary: 'not set' });
      expect(out.certificate.keysDestroyed.map((k) => k.keyId)).toEqual(['user:t1/alice']);
      expect(out.certificate.guarantees?.vaultDurabilityFindings).toEqual(out.vaultDurability);
      expect(out.certificate.graceWindow.explanation).toMatch(/lethe saw 1 such copy in use on the vault database's server \(vault-wal-archive;/);
      expect(verifyCertificate(out.certificate, await (await env.rt.vault()).getSigningPublicKeys(['lifecycle']))).toEqual({ ok: true });
      // With --json the person-facing label stays off stderr; the warn log line is there.
      expect(approve.stderr).not.toMatch(/lethe: warning \[/);
      expect(approve.stderr).toMatch(/"level":40.*"finding":"vault-wal-archive"/);
      expect(approve.stdout + approve.stderr).not.toContain(ARCHIVE_MARKER);
    });

    it('erase approve: the labelled warning goes to stderr, the guarantees to stdout', async () => {
      const id = await request('bob');
      const approve = await run('erase', 'approve', id, '--actor', 'dpo-eve');
      expectExit(approve, 0);
      expect(approve.stderr).toMatch(/lethe: WARNING: the destroyed keys may survive in the vault database's own copies/);
      expect(approve.stderr).toMatch(/lethe: warning \[vault-wal-archive\]: The vault database archives its WAL \(archive_mode=on/);
      expect(approve.stdout).not.toMatch(/lethe: warning/);
      expect(approve.stdout).toMatch(/NOT guaranteed by lethe/);
      expect(approve.stdout).toMatch(/seen at execution \[vault-wal-archive\]/);
    });

    it('lifecycle apply lists the attached WAL receiver when it finishes an approved request', async () => {
      const v = await env.rt.vault();
      // Approved, then interrupted before executing: apply finishes it.
      const approvedOnly = async (user: string): Promise<string> => {
        const id = await request(user);
        await v.approveEraseRequest(id, 'dpo-eve', {
          check: () => Promise.resolve(),
          audit: () => ({ actor: 'dpo-eve', action: 'erase.approve', subject: id }),
        });
        return id;
      };
      const id = await approvedOnly('carol');
      receiver = await startReceiver(cluster);
      try {
        const apply = await run('lifecycle', 'apply', '--actor', 'ops', '--json');
        expectExit(apply, 0);
        const result = jsonOut(apply) as { requestsFinished: number; requestKeysDestroyed: number; vaultDurability: DurabilityFinding[] };
        expect(result.requestsFinished).toBe(1);
        expect(result.requestKeysDestroyed).toBe(1);
        expect(codes(result.vaultDurability)).toEqual([DurabilityCode.WAL_ARCHIVE, DurabilityCode.REPLICAS]);
        expect(result.vaultDurability[1]?.details).toMatchObject({ clients: 1, applicationNames: [RECEIVER_NAME] });
        expect(apply.stderr).toMatch(/"level":40.*"finding":"vault-replicas"/);
        const cert = (await v.getEraseRequest(id))?.certificate as DestructionCertificate;
        expect(codes(cert.guarantees?.vaultDurabilityFindings ?? [])).toEqual([DurabilityCode.WAL_ARCHIVE, DurabilityCode.REPLICAS]);

        await approvedOnly('dave');
        const human = await run('lifecycle', 'apply', '--actor', 'ops');
        expectExit(human, 0);
        expect(human.stdout).toMatch(/keys destroyed {14}0 \(and 1 by deletion requests\)/);
        expect(human.stderr).toMatch(/lethe: warning \[vault-wal-archive\]: /);
        expect(human.stderr).toMatch(/lethe: warning \[vault-replicas\]: 1 WAL streaming client is attached/);

        // Nothing left to destroy: the findings are still reported, but not as warnings.
        const again = await run('lifecycle', 'apply', '--actor', 'ops', '--json');
        expectExit(again, 0);
        expect(codes((jsonOut(again) as { vaultDurability: DurabilityFinding[] }).vaultDurability)).toEqual([
          DurabilityCode.WAL_ARCHIVE,
          DurabilityCode.REPLICAS,
        ]);
        expect(again.stderr).not.toMatch(/lethe: warning \[|"finding":/);
      } finally {
        await receiver.stop();
        receiver = undefined;
      }
    }, 120_000);
  });
});
