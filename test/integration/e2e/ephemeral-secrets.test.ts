import { access, lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantKeyId } from '../../../src/cells/index.ts';
import {
  cellKey,
  decryptBytes,
  parseX25519PrivateKeyPem,
  publicKeyOf,
  readMasterKeyFile,
  sharedSecret,
  x25519PrivateKey,
  type MasterKey,
} from '../../../src/crypto/index.ts';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import { KeyOpener, type SecretObserver } from '../../../src/keys/index.ts';
import type { CellEntry } from '../../../src/manifest/index.ts';
import { readCell } from '../../../src/restore/cell-reader.ts';
import { openSnapshotManifest } from '../../../src/restore/manifest-source.ts';
import { CELL_DIGEST_KEY_LABEL } from '../../../src/snapshot/backup.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import {
  createLetheEnv,
  vaultRowsText,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate, FOUR_DIMENSION_CELL } from './tiny-chat-store.ts';

/**
 * Must hold (issue 8): a backup never writes an ephemeral secret anywhere. Two backups run
 * (through the backup job, as the CLI runs it) with the `observeSecrets` hook collecting
 * every ephemeral private key, shared secret and tuple key they make; none of them may then
 * be found, as raw bytes, hex (either case) or base64 / base64url (at any alignment), in any
 * vault row, any object in the bucket (gzip ones also decompressed), the backups' log (trace
 * level, so debug lines included) or any file under the run's directories: the environment's
 * directory (config, keys, the filesystem store) with the directory os.tmpdir() pointed at
 * during the runs inside it, and whatever appeared in the system temp directory meanwhile.
 * The other secrets a backup holds are looked for too: each cell's key, the digest key and
 * the dimension keys' private halves.
 *
 * And a backup needs only public key material: both backups run with the master key file
 * removed, so no wrapped dimension identity can have been opened; the second one uses
 * dimension keys the first created (their public halves only).
 */

type Kind = Parameters<SecretObserver>[0];

interface Secret {
  readonly kind: Kind | 'cell key' | 'digest key' | 'dimension private key';
  readonly bytes: Buffer;
}

/** Index of 32-byte secrets by their first four bytes, for a linear scan of any haystack. */
class SecretIndex {
  readonly #byPrefix = new Map<number, Secret[]>();

  constructor(readonly secrets: readonly Secret[]) {
    for (const s of secrets) {
      if (s.bytes.length < 4) throw new Error('a secret is too short to index');
      const prefix = s.bytes.readUInt32LE(0);
      this.#byPrefix.set(prefix, [...(this.#byPrefix.get(prefix) ?? []), s]);
    }
  }

  /** The secrets found verbatim in `bytes`. */
  raw(bytes: Buffer, found: Set<Secret>): void {
    for (let i = 0; i + 4 <= bytes.length; i++) {
      const candidates = this.#byPrefix.get(bytes.readUInt32LE(i));
      if (candidates === undefined) continue;
      for (const s of candidates)
        if (bytes.subarray(i, i + s.bytes.length).equals(s.bytes)) found.add(s);
    }
  }

  /**
   * The secrets found in `bytes` raw, or as text encoded in hex (any case, any offset) or
   * base64 / base64url (any alignment): every long enough run of such characters is decoded
   * at each possible offset and scanned raw.
   */
  find(bytes: Buffer): Secret[] {
    const found = new Set<Secret>();
    this.raw(bytes, found);
    const text = bytes.toString('latin1');
    for (const run of text.match(/[0-9a-fA-F]{64,}/g) ?? []) {
      for (const at of [0, 1]) this.raw(Buffer.from(run.slice(at), 'hex'), found);
    }
    // 32 bytes are 43 base64 characters; the secret's own characters are at least 40 of them.
    for (const run of text.match(/[A-Za-z0-9+/_-]{40,}/g) ?? []) {
      const standard = run.replaceAll('-', '+').replaceAll('_', '/');
      for (const at of [0, 1, 2, 3]) this.raw(Buffer.from(standard.slice(at), 'base64'), found);
    }
    return [...found];
  }
}

function describeFound(found: readonly Secret[]): string[] {
  return found.map((s) => `${s.kind} ${s.bytes.toString('hex').slice(0, 8)}…`);
}

/** Every regular file under `root` (recursively); entries that vanish or cannot be read are skipped. */
async function readableFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.isFile()) out.push(path);
    }
  };
  const info = await lstat(root).catch(() => null);
  if (info?.isDirectory() === true) await walk(root);
  else if (info?.isFile() === true) out.push(root);
  return out;
}

/** A file's bytes, and when they are gzip (by their magic, so also without a `.gz` name) the decompressed bytes too. */
function withInflated(bytes: Buffer): Buffer[] {
  if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return [bytes];
  try {
    return [bytes, gunzipSync(bytes)];
  } catch {
    return [bytes]; // random bytes that happen to start like gzip
  }
}

describe('a backup writes no ephemeral secret anywhere', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let master: MasterKey;
  /** Where os.tmpdir() pointed during the backups (inside env.dir). */
  let runTmp: string;
  /** Entries of the system temp directory that appeared while the backups ran. */
  const newTmpEntries: string[] = [];
  const observed: Secret[] = [];
  const results: BackupResult[] = [];
  /** Whether the master key file existed while each backup ran. */
  const masterKeyPresent: boolean[] = [];
  let index: SecretIndex;

  const observe: SecretObserver = (kind, secret) => {
    // A copy: the backup zeroes its secrets when it ends.
    observed.push({ kind, bytes: Buffer.from(secret) });
  };

  /** The backup job as the CLI runs it, with the hook; its log goes to env.logText() at trace level. */
  async function observedBackup(): Promise<BackupResult> {
    masterKeyPresent.push(
      await access(env.masterKeyFile).then(
        () => true,
        () => false,
      ),
    );
    return backup(env.rt, { actor: 'e2e', observeSecrets: observe });
  }

  async function manifestCells(
    snapshotId: string,
  ): Promise<{ cells: CellEntry[]; ephemerals: Map<string, Buffer> }> {
    const vault = await env.rt.vault();
    const manifest = await openSnapshotManifest(
      vault,
      await env.rt.store(),
      await vault.getSnapshot(snapshotId),
    );
    try {
      const cells: CellEntry[] = [];
      for await (const cell of manifest.cells()) cells.push(cell);
      const ephemerals = new Map(
        [...manifest.encapsulations].map(([id, e]) => [id, Buffer.from(e.ephemeral, 'hex')]),
      );
      return { cells, ephemerals };
    } finally {
      await manifest.close();
    }
  }

  async function dimensionPrivateKey(id: string): Promise<Buffer> {
    const wrapped = (await (await env.rt.vault()).getWrappedDimensionIdentities([id])).get(id);
    if (wrapped === undefined || wrapped === null) throw new Error(`no wrapped identity for ${id}`);
    const pem = Buffer.from(await decryptBytes(wrapped, [master.identity])).toString('utf8');
    return Buffer.from(parseX25519PrivateKeyPem(pem, id));
  }

  beforeAll(async () => {
    template = await createTinyChatTemplate('e2e_ephem_tpl');
    env = await createLetheEnv({ template: template.name, logLevel: 'trace' });
    await initialize(env.rt, 'e2e');
    master = await readMasterKeyFile(env.masterKeyFile);
    const masterKeyText = await readFile(env.masterKeyFile);
    runTmp = join(env.dir, 'tmp');
    await mkdir(runTmp);
    const systemTmp = tmpdir();
    const tmpBefore = new Set(await readdir(systemTmp));
    const savedTmpdir = process.env['TMPDIR'];
    // The backup needs only the master key's public recipient (from the vault): without the
    // private half it cannot open a single wrapped dimension identity.
    await rm(env.masterKeyFile);
    process.env['TMPDIR'] = runTmp;
    try {
      results.push(await observedBackup());
      // New rows: a new user and a new period (new dimension keys), and changed cells whose
      // dimension keys the first backup created (used again, from their public halves only).
      const chat = new pg.Client({ connectionString: env.chat.url });
      await chat.connect();
      try {
        await chat.query(`
          INSERT INTO public.users (id, tenant_id, handle, display_name, email, created_at)
            VALUES (23, 3, 'eve', 'Eve', 'eve@acme.example', '2026-03-01 00:00:00+00');
          INSERT INTO public.messages (id, conversation_id, sender_id, thread_root_id, body, created_at, edited) VALUES
            (9008, 7, 23, NULL, 'new here', '2026-03-02 08:00:00+00', false),
            (9009, 7, 21, NULL, 'march', '2026-03-02 09:00:00+00', false),
            (9010, 9, 31, NULL, 'more globex news', '2026-01-08 12:00:00+00', false);`);
      } finally {
        await chat.end();
      }
      results.push(await observedBackup());
    } finally {
      if (savedTmpdir === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = savedTmpdir;
      await writeFile(env.masterKeyFile, masterKeyText, { mode: 0o600 });
    }
    for (const name of await readdir(systemTmp))
      if (!tmpBefore.has(name)) newTmpEntries.push(join(systemTmp, name));

    // The backup's other secrets: none may be written in the clear either.
    const others: Secret[] = [
      {
        kind: 'digest key',
        bytes: Buffer.from((await env.rt.signer('backup')).derive(CELL_DIGEST_KEY_LABEL)),
      },
    ];
    for (const key of await (await env.rt.vault()).listDimensionKeys())
      others.push({ kind: 'dimension private key', bytes: await dimensionPrivateKey(key.id) });
    const opener = new KeyOpener(await env.rt.vault(), master.identity);
    for (const result of results) {
      for (const cell of (await manifestCells(result.snapshotId)).cells) {
        const key = await opener.open(cell.key, cell.enc);
        if (!key.ok) throw new Error(`cell ${cell.id} does not open: ${JSON.stringify(key)}`);
        others.push({ kind: 'cell key', bytes: cellKey(key.prk, cell.id) });
      }
    }
    index = new SecretIndex([...observed, ...others]);
  }, 120_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('ran both backups without the master identity, and observed every kind of secret', () => {
    expect(masterKeyPresent).toEqual([false, false]);
    const [first, second] = results;
    if (first === undefined || second === undefined) throw new Error('two backups expected');
    // Two tenants have new cells in each run: two encapsulations each.
    expect(first.encapsulations).toBe(2);
    expect(second.encapsulations).toBe(2);
    expect(first.keysCreated).toBeGreaterThan(0);
    // New user and new period keys; the rest of what it wrote uses keys of the first run.
    expect(second.keysCreated).toBe(2);
    expect(second.cellsWritten).toBeGreaterThan(0);

    const count = (kind: Kind): number => observed.filter((s) => s.kind === kind).length;
    expect(count('ephemeral')).toBe(first.encapsulations + second.encapsulations);
    expect(count('shared')).toBeGreaterThanOrEqual(8);
    expect(count('tuple')).toBeGreaterThanOrEqual(4);
    for (const s of observed) {
      expect(s.bytes.length, s.kind).toBe(32);
      expect(
        s.bytes.some((b) => b !== 0),
        `${s.kind} is all zero: observed after it was wiped`,
      ).toBe(true);
    }
    expect(new Set(observed.map((s) => s.bytes.toString('hex'))).size).toBe(observed.length);
  });

  it('the observed secrets are the ones the backups used (the scan looks for the right bytes)', async () => {
    const vault = await env.rt.vault();
    const store = await env.rt.store();
    const hex = new Set(observed.map((s) => `${s.kind}:${s.bytes.toString('hex')}`));
    const ephemeralPublics = new Set(
      observed
        .filter((s) => s.kind === 'ephemeral')
        .map((s) => Buffer.from(publicKeyOf(s.bytes)).toString('hex')),
    );
    for (const result of results) {
      const { cells, ephemerals } = await manifestCells(result.snapshotId);
      const own = [...ephemerals].filter(([id]) => id.startsWith(`${result.snapshotId}/`));
      expect(own).toHaveLength(2);
      // Each encapsulation's public key belongs to an observed ephemeral private key.
      for (const [id, e] of own) expect(ephemeralPublics.has(e.toString('hex')), id).toBe(true);
      // The tenant key's shared secret with this run's encapsulation was observed: in the
      // second run, from a key the first one created, without its private half.
      const tenantE = ephemerals.get(`${result.snapshotId}/${FOUR_DIMENSION_CELL.tenant}`);
      if (tenantE === undefined) throw new Error('no encapsulation of tenant 3');
      const tenantKey = tenantKeyId(FOUR_DIMENSION_CELL.tenant);
      const z = sharedSecret(
        x25519PrivateKey(await dimensionPrivateKey(tenantKey)),
        tenantE,
        tenantKey,
      );
      expect(hex.has(`shared:${z.toString('hex')}`)).toBe(true);
      // Every written cell opens (master key back in place) with an observed tuple key.
      const opener = new KeyOpener(vault, master.identity);
      const written = cells.filter((c) => !c.reused);
      expect(written.length).toBeGreaterThan(0);
      for (const cell of written) {
        const key = await opener.open(cell.key, cell.enc);
        if (!key.ok) throw new Error(`cell ${cell.id} does not open: ${JSON.stringify(key)}`);
        expect(hex.has(`tuple:${key.prk.toString('hex')}`), cell.id).toBe(true);
        expect((await readCell(cell, { store, key })).status, cell.id).toBe('ok');
      }
    }
  });

  it('the scan finds a secret in each form it looks for', () => {
    const secret = observed.find((s) => s.kind === 'tuple');
    if (secret === undefined) throw new Error('no tuple key observed');
    const alone = new SecretIndex([secret]);
    const noise = (n: number): Buffer => Buffer.alloc(n, 0xa5);
    const b64 = (k: number, encoding: 'base64' | 'base64url'): Buffer =>
      Buffer.from(
        `x=${Buffer.concat([noise(k), secret.bytes, noise(5)]).toString(encoding)};`,
        'latin1',
      );
    const forms: Record<string, Buffer> = {
      raw: Buffer.concat([noise(7), secret.bytes, noise(3)]),
      hex: Buffer.from(`"\\\\x${secret.bytes.toString('hex')}"`, 'latin1'),
      'hex at an odd offset': Buffer.from(
        `a${noise(1).toString('hex')}${secret.bytes.toString('hex')}`,
        'latin1',
      ),
      HEX: Buffer.from(secret.bytes.toString('hex').toUpperCase(), 'latin1'),
      ...Object.fromEntries(
        [0, 1, 2].flatMap((k) => [
          [`base64 after ${k}`, b64(k, 'base64')],
          [`base64url after ${k}`, b64(k, 'base64url')],
        ]),
      ),
    };
    for (const [form, haystack] of Object.entries(forms))
      expect(alone.find(haystack), form).toEqual([secret]);
    expect(alone.find(Buffer.from(secret.bytes.toString('hex').slice(2), 'latin1'))).toEqual([]);
  });

  it('no vault row holds any of them', async () => {
    const rows = Buffer.from(await vaultRowsText(env.vaultDb.url), 'utf8');
    // The scan does see what is there: the encapsulations' public keys (bytea as hex).
    const publics = new SecretIndex(
      observed
        .filter((s) => s.kind === 'ephemeral')
        .map((s) => ({ kind: 'ephemeral', bytes: Buffer.from(publicKeyOf(s.bytes)) })),
    );
    expect(publics.find(rows)).toHaveLength(4);
    expect(describeFound(index.find(rows))).toEqual([]);
  });

  it('no object in the bucket holds any of them, compressed or not', async () => {
    const store = await env.rt.store();
    const keys: string[] = [];
    for await (const info of store.list('')) keys.push(info.key);
    expect(keys.filter((k) => k.startsWith('snapshots/'))).toHaveLength(2);
    expect(keys.some((k) => k.startsWith('packs/'))).toBe(true);
    let inflated = 0;
    for (const key of keys) {
      const variants = withInflated(Buffer.from(await store.getBytes(key)));
      inflated += variants.length - 1;
      for (const bytes of variants) expect(describeFound(index.find(bytes)), key).toEqual([]);
    }
    expect(inflated).toBeGreaterThanOrEqual(2);
  });

  it('the backups’ log holds none of them', () => {
    const log = env.logText();
    expect(log).toMatch(/"msg":"backup complete"/);
    expect(log).toContain(results[0]?.snapshotId ?? '<none>');
    expect(describeFound(index.find(Buffer.from(log, 'utf8')))).toEqual([]);
  });

  it('no file under the run’s directories holds any of them', async () => {
    const files = await readableFiles(env.dir);
    // The store's files are among them, and what lethe put in os.tmpdir() during the runs.
    expect(files.some((f) => f.startsWith(join(env.dir, 'store', 'packs')))).toBe(true);
    expect(runTmp.startsWith(env.dir)).toBe(true);
    for (const entry of newTmpEntries) files.push(...(await readableFiles(entry)));
    for (const file of files) {
      let bytes: Buffer;
      try {
        bytes = await readFile(file);
      } catch {
        continue; // removed meanwhile (another test's temp file)
      }
      for (const variant of withInflated(bytes))
        expect(describeFound(index.find(variant)), file).toEqual([]);
    }
  });
});
