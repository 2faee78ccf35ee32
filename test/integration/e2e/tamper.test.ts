import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import type { CellEntry } from '../../../src/manifest/index.ts';
import type { VerifyResult } from '../../../src/restore/index.ts';
import { readTree } from '../../helpers/tree.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  queryValue,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: verify detects any change to a pack or a manifest, names what is wrong, keeps
 * going past the first problem, and never crashes on damaged or missing objects.
 */

describe('verify against a tampered store', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let snapshotId: string;
  let manifestPath: string;
  let manifestBytes: Buffer;
  let cells: CellEntry[];
  /** Files a test changed, with their original bytes, put back after each test. */
  const originals = new Map<string, Buffer>();

  const storeFile = (key: string): string => join(env.storePath ?? '', ...key.split('/'));

  async function tamper(path: string, change: (bytes: Buffer) => Buffer): Promise<void> {
    const bytes = await readFile(path);
    if (!originals.has(path)) originals.set(path, Buffer.from(bytes));
    await writeFile(path, change(Buffer.from(bytes)));
  }

  async function verifyNow(): Promise<VerifyResult> {
    return verify(env.rt, { snapshot: snapshotId, actor: 'e2e' });
  }

  function cellsOf(table: string): CellEntry[] {
    return cells.filter((c) => c.table === table);
  }

  beforeAll(async () => {
    template = await createChatTemplate('e2e_tamper_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    const result = await backup(env.rt, { actor: 'e2e' });
    snapshotId = result.snapshotId;
    manifestPath = storeFile(result.manifest);
    manifestBytes = await readFile(manifestPath);
    cells = (await readTree(env.storePath ?? '', result.manifest)).cells;
    expect(cells).toHaveLength(result.cells);
    expect(new Set(cells.map((c) => c.pack)).size).toBeGreaterThan(1);
  });
  afterEach(async () => {
    for (const [path, bytes] of originals) await writeFile(path, bytes);
    originals.clear();
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('passes on the untouched store', async () => {
    const result = await verifyNow();
    expect(result.findings).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.cellsVerified).toBe(cells.length);
  });

  it('names each cell whose pack bytes changed, verifies all the others, and exits 3 (CLI)', async () => {
    // One flipped byte in each of two cells in different packs: both must be reported.
    const first = cellsOf('message_edits')[0];
    const second = cells.findLast((c) => c.pack !== first?.pack);
    if (first === undefined || second === undefined)
      throw new Error('fixture: no two cells in different packs');
    for (const cell of [first, second]) {
      await tamper(storeFile(cell.pack), (bytes) => {
        const at = cell.offset + Math.floor(cell.length / 2);
        bytes[at] = (bytes[at] ?? 0) ^ 0x01;
        return bytes;
      });
    }
    const run = await env.cli([
      'verify',
      '--config',
      env.configPath,
      '--snapshot',
      snapshotId,
      '--json',
    ]);
    expectExit(run, 3);
    const result = jsonOut(run) as VerifyResult;
    expect(result.ok).toBe(false);
    expect(result.cells).toBe(cells.length);
    expect(result.cellsFailed).toBe(2);
    expect(result.cellsVerified).toBe(cells.length - 2);
    const subjects = result.findings.map((f) => f.subject);
    expect(subjects).toContain(`cell ${first.id}`);
    expect(subjects).toContain(`cell ${second.id}`);
    const finding = result.findings.find((f) => f.subject === `cell ${first.id}`);
    expect(finding?.problem).toMatch(/sha256/);
  });

  it('reports a manifest whose segment line was edited (valid JSON) as a bad signature and sha256', async () => {
    const target = cellsOf('messages').find((c) => c.rows >= 2) ?? cellsOf('messages')[0];
    if (target === undefined) throw new Error('fixture: no message cell');
    const segment = target.id.split('/').slice(0, 3).join('/');
    await tamper(manifestPath, (bytes) => {
      const text = gunzipSync(bytes).toString('utf8');
      const lines = text.split('\n');
      const index = lines.findIndex((l) => l.includes(`"id":${JSON.stringify(segment)}`));
      const line = lines[index];
      if (line === undefined) throw new Error(`cell ${target.id} not found in the manifest`);
      const edited = line.replace(/"rows":(\d+)/, (_m, digits: string) => {
        const last = Number(digits.at(-1));
        return `"rows":${digits.slice(0, -1)}${last === 9 ? 8 : last + 1}`;
      });
      expect(edited).not.toBe(line);
      lines[index] = edited;
      const out = lines.join('\n');
      JSON.parse(out); // still a valid document
      return gzipSync(out);
    });
    const result = await verifyNow();
    expect(result.ok).toBe(false);
    // The vault's sha256 is checked on the compressed bytes before anything is inflated.
    expect(result.findings.map((f) => f.code)).toEqual(['MANIFEST_SHA256']);
    // Nothing of an unauthenticated manifest is used: not one cell is read from it.
    expect(result.cells).toBe(0);
    expect(result.findings.map((f) => f.subject)).not.toContain(`cell ${target.id}`);
  });

  it('reports every cell of a deleted pack, and carries on with the rest', async () => {
    const pack = cells[0]?.pack;
    if (pack === undefined) throw new Error('fixture: no cells');
    const affected = cells.filter((c) => c.pack === pack);
    expect(affected.length).toBeLessThan(cells.length);
    const path = storeFile(pack);
    await rename(path, `${path}.moved`);
    try {
      const result = await verifyNow();
      expect(result.ok).toBe(false);
      expect(result.cellsFailed).toBe(affected.length);
      expect(result.cellsVerified).toBe(cells.length - affected.length);
      const subjects = new Set(result.findings.map((f) => f.subject));
      for (const cell of affected) expect(subjects.has(`cell ${cell.id}`), cell.id).toBe(true);
      expect(
        result.findings.find((f) => f.subject === `cell ${affected[0]?.id ?? ''}`)?.problem,
      ).toMatch(/NOT_FOUND/);
    } finally {
      await rename(`${path}.moved`, path);
    }
  });

  it('reports a manifest truncated mid-line as a finding, not a crash', async () => {
    await tamper(manifestPath, (bytes) => bytes.subarray(0, Math.floor(bytes.length / 2)));
    const result = await verifyNow();
    expect(result.ok).toBe(false);
    expect(result.findings.map((f) => f.code)).toEqual(['MANIFEST_SHA256']);
    expect(result.cells).toBe(0);
  });

  it('reports a manifest cut at a line boundary (no totals, no signature) as a finding', async () => {
    await tamper(manifestPath, (bytes) => {
      const text = gunzipSync(bytes).toString('utf8');
      const cut = text.lastIndexOf('\n"totals":');
      expect(cut).toBeGreaterThan(0);
      return gzipSync(text.slice(0, cut + 1));
    });
    const result = await verifyNow();
    expect(result.ok).toBe(false);
    expect(result.findings.map((f) => f.code)).toEqual(['MANIFEST_SHA256']);
    expect(result.cells).toBe(0);
  });

  it('reports a missing manifest as a failed check via the CLI (exit 3), not an unexpected error', async () => {
    await rename(manifestPath, `${manifestPath}.moved`);
    try {
      const run = await env.cli([
        'verify',
        '--config',
        env.configPath,
        '--snapshot',
        snapshotId,
        '--json',
      ]);
      expectExit(run, 3);
      const result = jsonOut(run) as VerifyResult;
      expect(result.ok).toBe(false);
      expect(result.findings).toContainEqual(
        expect.objectContaining({ code: 'NOT_FOUND', subject: `snapshots/${snapshotId}.json.gz` }),
      );
    } finally {
      await rename(`${manifestPath}.moved`, manifestPath);
    }
  });

  it('refuses to restore a tampered snapshot and leaves the target empty', async () => {
    const cell = cellsOf('messages')[5];
    if (cell === undefined) throw new Error('fixture: too few message cells');
    await tamper(storeFile(cell.pack), (bytes) => {
      const at = cell.offset + cell.length - 1;
      bytes[at] = (bytes[at] ?? 0) ^ 0x80;
      return bytes;
    });
    const target = await env.database('e2e_tamper_restore');
    await expect(
      restore(env.rt, {
        snapshot: snapshotId,
        targetUrl: target.url,
        replace: false,
        blobTarget: env.blobTarget(),
        actor: 'e2e',
      }),
    ).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringContaining(cell.id) as unknown,
    });
    const tables = await queryValue<string>(
      target.url,
      "SELECT count(*)::text AS v FROM pg_tables WHERE schemaname = 'public'",
    );
    expect(tables).toBe('0');
  });

  describe('segment objects', () => {
    /** The segments of the snapshot's tree, from its manifest. */
    const segmentsOf = async (): Promise<{ id: string; key: string; table: string }[]> => (await readTree(env.storePath ?? '', `snapshots/${snapshotId}.json.gz`)).segments;

    it('names a segment with a flipped byte, and one cut short, and verifies every other cell', async () => {
      const segments = (await segmentsOf()).filter((s) => s.table === 'messages');
      const [flipped, truncated] = segments;
      if (flipped === undefined || truncated === undefined) throw new Error('fixture: too few message segments');
      await tamper(storeFile(flipped.key), (bytes) => {
        bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0x04;
        return bytes;
      });
      await tamper(storeFile(truncated.key), (bytes) => bytes.subarray(0, bytes.length - 7));
      const lost = cells.filter((c) => c.id.startsWith(`${flipped.id}/`) || c.id.startsWith(`${truncated.id}/`)).length;
      const result = await verifyNow();
      expect(result.ok).toBe(false);
      // (Rows that refer to the lost ones also fail their foreign keys: findings of their own.)
      expect(result.findings.filter((f) => f.subject.startsWith('segment ')).map((f) => [f.subject, f.code])).toEqual([
        [`segment ${flipped.id}`, 'SEGMENT_SHA256'],
        [`segment ${truncated.id}`, 'SEGMENT_SHA256'],
      ]);
      expect(result.cellsFailed).toBe(lost);
      expect(result.cellsVerified).toBe(cells.length - lost);
    });

    it('names a segment replaced by another, validly written segment of the same table, and restore refuses it', async () => {
      const [kept, other] = (await segmentsOf()).filter((s) => s.table === 'messages');
      if (kept === undefined || other === undefined) throw new Error('fixture: too few message segments');
      const replacement = await readFile(storeFile(other.key));
      await tamper(storeFile(kept.key), () => replacement);
      const result = await verifyNow();
      expect(result.ok).toBe(false);
      expect(result.findings.filter((f) => f.subject.startsWith('segment ')).map((f) => [f.subject, f.code])).toEqual([[`segment ${kept.id}`, 'SEGMENT_SHA256']]);
      const target = await env.database('e2e_tamper_segment_restore');
      await expect(restore(env.rt, { snapshot: snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' })).rejects.toMatchObject({
        code: 'INTEGRITY',
        message: expect.stringContaining(kept.id) as unknown,
      });
    });
  });

  it('passes again once every object is back', async () => {
    expect(await readFile(manifestPath)).toEqual(manifestBytes);
    const result = await verifyNow();
    expect(result.ok).toBe(true);
  });
});
