import { createHmac } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { cellKey, encryptBytes, generateRawKeyPair, openSealed, readMasterKeyFile, x25519PrivateKeyPem } from '../../../src/crypto/index.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import { backup, exportHeld, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { KeyOpener } from '../../../src/keys/index.ts';
import { approveErasure, requestErasure } from '../../../src/lifecycle/erase.ts';
import { placeHold, releaseHold } from '../../../src/lifecycle/holds.ts';
import { CELL_DIGEST_KEY_LABEL } from '../../../src/snapshot/backup.ts';
import { digestPrefix } from '../../../src/snapshot/cell-writer.ts';
import { demoSample, type DemoSample } from '../../../src/store/demo-sample.ts';
import { readTree } from '../../helpers/tree.ts';
import {
  createChatTemplate,
  createLetheEnv,
  filesUnder,
  vaultRowsText,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold (issue 7): attacks by someone who can write to the bucket (or read or write the
 * vault), each of which worked against lethe before the fixes, now fail safe.
 */

describe('an attacker with write access to the bucket', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let snapshotId: string;
  let manifestPath: string;
  let snapshotManifest: string;
  let sample: DemoSample;
  const originals = new Map<string, Buffer>();

  const storeFile = (key: string): string => join(env.storePath ?? '', ...key.split('/'));

  /** Rewrites one line of the manifest (the signature line is left as it was) and compresses it again. */
  async function editManifestLine(prefix: string, edit: (value: unknown) => unknown): Promise<void> {
    const bytes = await readFile(manifestPath);
    if (!originals.has(manifestPath)) originals.set(manifestPath, Buffer.from(bytes));
    const lines = gunzipSync(bytes).toString('utf8').split('\n');
    const at = lines.findIndex((l) => l.startsWith(`"${prefix}":`));
    const line = lines[at] ?? '';
    const value = JSON.parse(line.slice(prefix.length + 3).replace(/,$/, '')) as unknown;
    lines[at] = `"${prefix}":${JSON.stringify(edit(value))},`;
    await writeFile(manifestPath, gzipSync(lines.join('\n')));
  }

  beforeAll(async () => {
    template = await createChatTemplate('e2e_attack_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    const result = await backup(env.rt, { actor: 'e2e' });
    snapshotId = result.snapshotId;
    manifestPath = storeFile(result.manifest);
    snapshotManifest = result.manifest;
    sample = await demoSample(env.chat.url);
  }, 180_000);
  afterEach(async () => {
    for (const [path, bytes] of originals) await writeFile(path, bytes);
    originals.clear();
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('cannot make restore or verify run SQL by editing the manifest schema (item 1)', async () => {
    // The server's own OS user must be able to write the marker, as COPY TO PROGRAM would.
    const markerDir = await mkdtemp(join(tmpdir(), 'lethe-attack-'));
    await chmod(markerDir, 0o777);
    const marker = join(markerDir, 'pwned');
    try {
      await editManifestLine('schema', (schema) => {
        const s = schema as { tables: { columns: { type: string }[] }[] };
        const column = s.tables[0]?.columns[0];
        if (column === undefined) throw new Error('no column to edit');
        column.type = `bigint); COPY (SELECT 1) TO PROGRAM 'touch ${marker}'; CREATE TABLE lethe_injected (x bigint`;
        return s;
      });
      const target = await env.database('attack_restore');
      const refused = await restore(env.rt, { snapshot: snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' }).then(
        () => null,
        (err: unknown) => err,
      );
      expect(isLetheError(refused, 'INTEGRITY')).toBe(true);
      expect((refused as Error).message).toMatch(/cannot be trusted, so none of it was used/);
      const checked = await verify(env.rt, { snapshot: snapshotId, actor: 'e2e' });
      expect(checked.ok).toBe(false);
      // Refused by its hash against the vault's record, before it is even decompressed.
      expect(checked.findings.map((f) => f.code)).toEqual(['MANIFEST_SHA256']);
      expect(checked.cellsVerified).toBe(0);
      await expect(stat(marker)).rejects.toThrow(/ENOENT/);
      // The restore target was never touched: no table, injected or not.
      const client = new pg.Client({ connectionString: target.url });
      await client.connect();
      try {
        const { rows } = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'");
        expect(rows[0]?.n).toBe(0);
      } finally {
        await client.end();
      }
    } finally {
      await rm(markerDir, { recursive: true, force: true });
    }
  });

  it('cannot change the column layout of a legal hold export (item 1)', async () => {
    await placeHold(await env.rt.vault(), { caseId: 'CASE-ATTACK', tenant: sample.tenant, user: sample.user, reason: 'litigation', actor: 'legal', allowUnsigned: true });
    await editManifestLine('snapshot', (header) => {
      const h = header as { tables: { name: string; columns: string[] }[] };
      const messages = h.tables.find((t) => t.name === 'messages');
      if (messages === undefined) throw new Error('no messages table');
      messages.columns.reverse();
      return h;
    });
    const out = join(env.dir, 'export-attack');
    const refused = await exportHeld(env.rt, { caseId: 'CASE-ATTACK', outDir: out, actor: 'legal' }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(isLetheError(refused, 'INTEGRITY')).toBe(true);
    expect(await filesUnder(out)).toEqual([]);
    await releaseHold(await env.rt.vault(), 'CASE-ATTACK', { actor: 'legal', allowUnsigned: true });
  });

  it('says so loudly when a restore connects as a superuser (item 1)', async () => {
    const target = await env.database('attack_superuser');
    const result = await restore(env.rt, { snapshot: snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    expect(result.warnings.join('\n')).toMatch(/superuser.*runbooks\/restore-role\.md/s);
  });

  it('a vault row whose wrapped identity was swapped is named, never used (item 4)', async () => {
    const keyId = userKeyId(sample.tenant, sample.user);
    const master = await readMasterKeyFile(env.masterKeyFile);
    const impostor = await encryptBytes(Buffer.from(x25519PrivateKeyPem(generateRawKeyPair().privateKey)), [master.recipient]);
    const client = new pg.Client({ connectionString: env.vaultDb.url });
    await client.connect();
    const { rows } = await client.query<{ w: Buffer }>('SELECT wrapped_identity AS w FROM lethe.dimension_keys WHERE id = $1', [keyId]);
    const original = rows[0]?.w;
    if (original === undefined) throw new Error('no user key');
    try {
      await client.query('UPDATE lethe.dimension_keys SET wrapped_identity = $1 WHERE id = $2', [Buffer.from(impostor), keyId]);
      const checked = await verify(env.rt, { snapshot: snapshotId, actor: 'e2e' });
      expect(checked.ok).toBe(false);
      expect(checked.cellsFailed).toBeGreaterThan(0);
      expect(checked.cellsVerified).toBeGreaterThan(checked.cellsFailed);
      const cells = checked.findings.filter((f) => f.subject.startsWith('cell '));
      expect(cells).toHaveLength(checked.cellsFailed);
      for (const f of cells) expect(f.problem).toMatch(new RegExp(`dimension key ${keyId.replaceAll('/', '\\/')}, which cannot be trusted: .*not the key its recipient names`));
      // What else verify says follows from those cells' rows missing (their replies dangle).
      expect(checked.findings.filter((f) => !f.subject.startsWith('cell ')).map((f) => f.code)).toEqual(
        checked.findings.filter((f) => !f.subject.startsWith('cell ')).map(() => 'CONSTRAINT_FAILED'),
      );
    } finally {
      await client.query('UPDATE lethe.dimension_keys SET wrapped_identity = $1 WHERE id = $2', [original, keyId]);
      await client.end();
    }
  });

  it('after an erasure, nothing in the bucket or the vault confirms a guess of the erased content (item 7)', async () => {
    const vault = await env.rt.vault();
    const store = await env.rt.store();
    const master = await readMasterKeyFile(env.masterKeyFile);
    // The guess: the exact plaintext of one of the user's message cells (the best an attacker could guess).
    const manifest = await readTree(env.storePath ?? '', snapshotManifest);
    const target = manifest.cells.find((c) => c.table === 'messages' && c.tenant === sample.tenant && c.dims.includes(userKeyId(sample.tenant, sample.user)));
    if (target === undefined) throw new Error('the sample user has no messages cell');
    const opened = await new KeyOpener(vault, master.identity).open(target.key, target.enc);
    if (!opened.ok) throw new Error('cannot open the cell before the erasure');
    const plaintext = openSealed(cellKey(opened.prk, target.id), await store.getRange(target.pack, target.offset, target.length), 'the cell');
    const columns = manifest.snapshot.tables.find((t) => t.name === 'messages')?.columns ?? [];
    const message = Buffer.concat([digestPrefix('messages', columns), Buffer.from(plaintext)]);

    /** Every 32-byte secret anyone holding the vault (or the backup's own key) could key a digest with. */
    const candidateKeys = async (): Promise<Buffer[]> => {
      const keys: Buffer[] = [Buffer.from((await env.rt.signer('backup')).derive(CELL_DIGEST_KEY_LABEL))];
      const text = await vaultRowsText(env.vaultDb.url);
      for (const hex of text.match(/[0-9a-f]{64}/g) ?? []) keys.push(Buffer.from(hex, 'hex'));
      for (const b64 of text.match(/[A-Za-z0-9+/]{43}=/g) ?? []) keys.push(Buffer.from(b64, 'base64'));
      return keys;
    };
    const bucketText = async (): Promise<string> => {
      const parts: string[] = [];
      for (const file of await filesUnder(env.storePath ?? '')) {
        const bytes = await readFile(join(env.storePath ?? '', file));
        parts.push((file.endsWith('.gz') ? gunzipSync(bytes) : bytes).toString('latin1'));
      }
      return parts.join('\n');
    };
    /** Digests of the guess under every candidate key that appear anywhere, as hex or base64. */
    const confirmations = async (): Promise<string[]> => {
      const haystack = `${await vaultRowsText(env.vaultDb.url)}\n${await bucketText()}`;
      const present = new Set(haystack.match(/[0-9a-f]{64}/g) ?? []);
      for (const b64 of haystack.match(/[A-Za-z0-9+/]{43}=/g) ?? []) present.add(Buffer.from(b64, 'base64').toString('hex'));
      const keys = new Map((await candidateKeys()).map((k) => [k.toString('hex'), k]));
      return [...keys.values()].map((key) => createHmac('sha256', key).update(message).digest('hex')).filter((d) => present.has(d));
    };

    // The search finds the digest while the user's data is live: it would see one if it stayed.
    expect(await confirmations()).not.toEqual([]);

    const request = await requestErasure(vault, { tenant: sample.tenant, scope: 'user', subject: sample.user, reason: 'GDPR Art. 17', actor: 'dpo-ann', allowUnsigned: true });
    await approveErasure(
      { vault, store, graceWindowDays: 7, now: () => new Date(), signer: await env.rt.signer('lifecycle') },
      request.id,
      { actor: 'dpo-bob', allowUnsigned: true },
    );
    expect(await confirmations()).toEqual([]);
    // The keyed fingerprints of its rows, and of the segment it was in, go with the keys too.
    const client = new pg.Client({ connectionString: env.vaultDb.url });
    await client.connect();
    try {
      const left = await client.query<{ digest: string | null; fingerprint: string | null; segment: string | null }>(
        `SELECT c.digest, c.fingerprint, g.fingerprint AS segment FROM lethe.cell_copies c
           LEFT JOIN lethe.segments g ON g.store = c.store AND g.segment = c.segment AND g.to_seq IS NULL
          WHERE c.cell_id = $1`,
        [target.id],
      );
      expect(left.rows.length).toBeGreaterThan(0);
      for (const row of left.rows) expect(row).toEqual({ digest: null, fingerprint: null, segment: null });
    } finally {
      await client.end();
    }
  });
});
