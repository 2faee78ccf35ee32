import { describe, expect, it } from 'vitest';
import { generateSigningKey, sign, verifySignature } from '../../../src/crypto/index.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import {
  manifestLines,
  readManifest,
  signedMessage,
  type CellEntry,
  type ManifestEvent,
  type SnapshotHeader,
} from '../../../src/manifest/index.ts';

const header: SnapshotHeader = {
  id: '20261128T000000Z-abcdef',
  createdAt: '2026-11-28T00:00:00.000Z',
  completedAt: '2026-11-28T00:01:00.000Z',
  previous: null,
  source: { databaseTime: '2026-11-28T00:00:00.000Z', transactionSnapshot: '1:1:', serverVersion: '15.18' },
  granularity: 'month',
  masterRecipient: 'age1qqqq',
  tables: [{ name: 'messages', class: 'messages', columns: ['id', 'body'] }],
};

function cell(i: number, reused = false): CellEntry {
  return {
    id: `messages/1/2026-0${i}/7`,
    table: 'messages',
    tenant: '1',
    class: 'messages',
    period: `2026-0${i}`,
    author: '7',
    key: `cell:1/messages/2026-0${i}/7`,
    pack: 'packs/ab/abcd',
    offset: i * 100,
    length: 100,
    sha256: 'a'.repeat(64),
    digest: 'b'.repeat(64),
    rows: i,
    bytesPlain: i * 10,
    reused,
  };
}

async function write(cells: CellEntry[]): Promise<{ bytes: Buffer; publicKey: string }> {
  const key = generateSigningKey();
  const source = async function* (): AsyncGenerator<CellEntry> {
    for (const c of cells) yield await Promise.resolve(c);
  };
  const parts: Buffer[] = [];
  for await (const line of manifestLines({
    header,
    schema: { tables: [] },
    keyFiles: [{ key: 'keys/x.ndjson', sha256: 'c'.repeat(64) }],
    cells: source(),
    sign: (message) => ({ keyId: 'k1', value: sign(key.privateKey, message) }),
  })) {
    parts.push(line);
  }
  return { bytes: Buffer.concat(parts), publicKey: key.publicKey };
}

async function read(bytes: Buffer): Promise<ManifestEvent[]> {
  const source = async function* (): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < bytes.length; i += 17) yield await Promise.resolve(bytes.subarray(i, i + 17));
  };
  const events: ManifestEvent[] = [];
  for await (const event of readManifest(source(), 'test manifest')) events.push(event);
  return events;
}

describe('manifest', () => {
  it('round-trips, is valid JSON, and its signature verifies', async () => {
    const { bytes, publicKey } = await write([cell(1), cell(2, true), cell(3)]);
    const whole = JSON.parse(bytes.toString('utf8')) as { cells: unknown[]; totals: { rows: number } };
    expect(whole.cells).toHaveLength(3);
    expect(whole.totals.rows).toBe(6);
    const events = await read(bytes);
    const cells = events.flatMap((e) => (e.type === 'cell' ? [e.cell] : []));
    expect(cells).toEqual([cell(1), cell(2, true), cell(3)]);
    const end = events.at(-1);
    if (end?.type !== 'end') throw new Error('no end event');
    expect(end.totals).toMatchObject({ cells: 3, rows: 6, cellsReused: 1, bytesStored: 200, rowsByTable: { messages: 6 } });
    expect(end.bodySha256).toBe(end.signature.sha256);
    expect(verifySignature(publicKey, signedMessage(end.bodySha256), end.signature.value)).toBe(true);
  });

  it('an empty snapshot is a valid manifest', async () => {
    const { bytes } = await write([]);
    const events = await read(bytes);
    expect(events.map((e) => e.type)).toEqual(['header', 'end']);
  });

  it('a modified cell no longer matches what was signed', async () => {
    const { bytes, publicKey } = await write([cell(1), cell(2)]);
    const tampered = Buffer.from(bytes.toString('utf8').replace('"rows":2', '"rows":9'), 'utf8');
    const end = (await read(tampered)).at(-1);
    if (end?.type !== 'end') throw new Error('no end event');
    expect(end.bodySha256).not.toBe(end.signature.sha256);
    expect(verifySignature(publicKey, signedMessage(end.bodySha256), end.signature.value)).toBe(false);
  });

  it('a truncated or malformed manifest is MANIFEST_INVALID with the line', async () => {
    const { bytes } = await write([cell(1), cell(2)]);
    for (const bad of [bytes.subarray(0, bytes.length - 30), bytes.subarray(0, 40), Buffer.from('{"format":"other"},\n')]) {
      const error = await read(bad).then(
        () => null,
        (err: unknown) => err,
      );
      expect(isLetheError(error, 'MANIFEST_INVALID')).toBe(true);
      expect((error as Error).message).toMatch(/line \d+/);
    }
  });
});
