import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { copyLines } from '../cells/copy-text.ts';
import { equalConstantTime, verifySignature } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { SchemaDescriptionSchema, type SchemaDescription } from '../mapping/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import { promisify } from 'node:util';
import { createGunzip, gunzip } from 'node:zlib';
import {
  CellEntrySchema,
  EncapsulationEntrySchema,
  MANIFEST_FORMAT,
  MANIFEST_FORMAT_V3,
  SEGMENT_FORMAT,
  SegmentEntrySchema,
  SegmentHeaderSchema,
  SignatureSchema,
  SnapshotHeaderSchema,
  TotalsSchema,
  TotalsV4Schema,
  signedMessage,
  type CellEntry,
  type EncapsulationEntry,
  type SegmentEntry,
  type Signature,
  type SnapshotHeader,
  type Totals,
} from './format.ts';

const gunzipAsync = promisify(gunzip);

/**
 * Reading a manifest back from the bucket, where anyone with write access could have put
 * anything. Nothing in a manifest is used before it is authenticated: {@link openManifest}
 * copies the stored object into a private temporary directory while hashing it, compares
 * that sha256 with the one the vault recorded when the backup stored it (before even
 * decompressing it: a planted gzip bomb is never inflated), decompresses it next to it while
 * hashing the raw uncompressed bytes (the signed body), checks the Ed25519 signature over the body's sha256 with a key the vault lists for backups, and only
 * then parses the header, checks that it names the expected snapshot and its place in the
 * chain, and validates the schema. Every later read comes from that verified local copy, so
 * the bucket cannot change the content between the check and its use.
 */

/** One problem that makes a manifest untrustworthy (the codes verify reports). */
export interface ManifestProblem {
  readonly code: 'MANIFEST_SHA256' | 'SIGNATURE' | 'CHAIN' | 'MANIFEST_MISMATCH' | 'MANIFEST_INVALID';
  readonly problem: string;
}

/** What the vault says the manifest must be. */
export interface ManifestExpectation {
  readonly snapshotId: string;
  /** The object key, `snapshots/<id>.json.gz`. */
  readonly key: string;
  /** sha256 of the whole object, recorded by the backup when it stored the manifest. */
  readonly sha256: string;
  /** The previous snapshot as the vault recorded it (null: the first snapshot). */
  readonly previous: { readonly id: string; readonly sha256: string | null } | null;
}

/** An authenticated manifest, read from its verified local copy. */
export interface TrustedManifest {
  readonly key: string;
  readonly header: SnapshotHeader;
  readonly schema: SchemaDescription;
  /** The encapsulations the cells' keys derive from, by id. */
  readonly encapsulations: ReadonlyMap<string, EncapsulationEntry>;
  readonly totals: Totals;
  readonly signature: Signature;
  /** sha256 of the whole object (equal to the vault's record). */
  readonly sha256: string;
  /** `lethe.manifest.v4` (a tree of segments) or `lethe.manifest.v3` (cells inline). */
  readonly format: string;
  /** The segments in manifest order (none for v3). Throws MANIFEST_INVALID on a malformed line. */
  segments(): AsyncGenerator<SegmentEntry>;
  /**
   * The cells in manifest order: for v4, each segment object fetched, checked against the
   * sha256 the signed manifest lists before it is decompressed, and validated against its
   * entry. A segment that fails is reported to `onProblem` and skipped, or, without it,
   * throws INTEGRITY. `tenant` skips other tenants' segments (system ones are kept).
   */
  cells(options?: CellReadOptions): AsyncGenerator<CellEntry>;
  /** Removes the local copy. Idempotent. */
  close(): Promise<void>;
}

/** A segment object that cannot be used: which, and why. */
export interface SegmentProblem {
  readonly segment: string;
  readonly key: string;
  readonly code: 'SEGMENT_SHA256' | 'SEGMENT_INVALID' | 'SEGMENT_MISSING';
  readonly problem: string;
  /** The cells the manifest lists in it (none of which could be read). */
  readonly cells: number;
}

export interface CellReadOptions {
  readonly onProblem?: (problem: SegmentProblem) => void;
  readonly tenant?: string;
  readonly signal?: AbortSignal;
}

function invalid(what: string, line: number, detail: string): LetheError {
  return new LetheError(ErrorCode.MANIFEST_INVALID, `manifest ${what}, line ${line}: ${detail}`);
}

function untrusted(key: string, problems: readonly ManifestProblem[]): LetheError {
  return new LetheError(
    problems.some((p) => p.code === 'MANIFEST_INVALID') && problems.length === 1 ? ErrorCode.MANIFEST_INVALID : ErrorCode.INTEGRITY,
    `manifest ${key} cannot be trusted, so none of it was used: ${problems.map((p) => p.problem).join('; ')}`,
    { details: { manifest: key, problems } },
  );
}

function parseJson<T>(text: string, schema: z.ZodType<T>, what: string, line: number, name: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid(what, line, `${name} is not valid JSON`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid(what, line, `${name} ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** The member `name` of the line `"name":<json>,` (a trailing comma is optional). */
function member<T>(line: Buffer | undefined, name: string, schema: z.ZodType<T>, what: string, lineNo: number): T {
  const text = line === undefined ? '' : line.toString('utf8', 0, line.length - 1);
  const prefix = `"${name}":`;
  if (!text.startsWith(prefix)) throw invalid(what, lineNo, `expected "${name}"`);
  return parseJson(text.slice(prefix.length).replace(/,$/, ''), schema, what, lineNo, `"${name}"`);
}

const FIRST_LINES = new Map([MANIFEST_FORMAT, MANIFEST_FORMAT_V3].map((f) => [`{"format":${JSON.stringify(f)},\n`, f]));

/** The raw facts of a downloaded copy, before anything in it is believed. */
interface Fetched {
  readonly dir: string;
  readonly path: string;
  readonly fileSha256: string;
  /** sha256 of every raw byte before the last line. */
  readonly bodySha256: string;
  /** The first three lines (format, snapshot, schema), the second to last (totals) and the last (signature). */
  readonly head: Buffer[];
  /** The lines of the encapsulations list, with their line numbers (bounded: one per tenant per snapshot that wrote cells). */
  readonly encapsulations: { readonly line: Buffer; readonly no: number }[];
  readonly totalsLine: Buffer | undefined;
  readonly lastLine: Buffer | undefined;
  readonly lines: number;
}

/**
 * Copies the stored object as it is to a new private directory, hashing it as it passes.
 * Nothing reads it (not even gunzip) until that hash matches the vault's record.
 */
async function download(store: ObjectStore, key: string, signal: AbortSignal | undefined): Promise<{ dir: string; fileSha256: string }> {
  const source = await store.get(key, signal === undefined ? {} : { signal });
  const dir = await mkdtemp(join(tmpdir(), 'lethe-manifest-'));
  try {
    const file = createHash('sha256');
    const handle = await open(join(dir, STORED), 'wx', 0o600);
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        file.update(chunk);
        await handle.write(chunk);
      }
    } finally {
      await handle.close();
    }
    return { dir, fileSha256: file.digest('hex') };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

const STORED = 'manifest.json.gz';
const PLAIN = 'manifest.json';

/**
 * Decompresses the verified copy next to it, hashing the uncompressed bytes before the last
 * line (what the signature covers) and keeping the few lines the checks need.
 */
async function inflate(dir: string, fileSha256: string): Promise<Fetched> {
  const path = join(dir, PLAIN);
  const handle = await open(path, 'wx', 0o600);
  const body = createHash('sha256');
  const head: Buffer[] = [];
  const encapsulations: { line: Buffer; no: number }[] = [];
  let inEncapsulations = false;
  let previous: Buffer | undefined;
  let last: Buffer | undefined;
  let lines = 0;
  try {
    const gunzip = createReadStream(join(dir, STORED)).pipe(createGunzip());
    async function* plain(): AsyncGenerator<Uint8Array> {
      for await (const chunk of gunzip as AsyncIterable<Buffer>) {
        await handle.write(chunk);
        yield chunk;
      }
    }
    for await (const line of copyLines(plain())) {
      lines += 1;
      if (last !== undefined) body.update(last);
      previous = last;
      last = line;
      if (head.length < 3) head.push(line);
      if (inEncapsulations) {
        if (line.toString('latin1') === '],\n') inEncapsulations = false;
        else encapsulations.push({ line, no: lines });
      } else if (line.toString('latin1') === '"encapsulations":[\n') {
        inEncapsulations = true;
      }
    }
  } catch {
    // Not gzip, cut short, or ending inside a line: nothing usable; the signature check says so.
    return { dir, path, fileSha256, bodySha256: '', head, encapsulations: [], totalsLine: undefined, lastLine: undefined, lines: -1 };
  } finally {
    await handle.close();
  }
  return { dir, path, fileSha256, bodySha256: body.digest('hex'), head, encapsulations, totalsLine: previous, lastLine: last, lines };
}

/**
 * Fetches and authenticates the manifest `expected.key`, trusting only signatures by
 * `trustedKeys` (key id → base64 Ed25519 public key; the vault's backup keys). Throws,
 * before any of the manifest's content is used:
 * - INTEGRITY (details.problems lists each: MANIFEST_SHA256, SIGNATURE, CHAIN,
 *   MANIFEST_MISMATCH) when the object is not byte for byte the one the vault recorded, its
 *   signature does not verify under a trusted key, or it names another snapshot or another
 *   predecessor than the vault;
 * - MANIFEST_INVALID for an authentic manifest that does not parse (a lethe bug), or whose
 *   schema fails the structural check (src/mapping/schema-check.ts);
 * - NOT_FOUND / STORAGE as the store raises them.
 * The caller must {@link TrustedManifest.close} the result.
 */
export async function openManifest(
  store: ObjectStore,
  expected: ManifestExpectation,
  trustedKeys: ReadonlyMap<string, string>,
  options: { signal?: AbortSignal } = {},
): Promise<TrustedManifest> {
  const what = expected.key;
  const copy = await download(store, what, options.signal);
  const close = async (): Promise<void> => {
    await rm(copy.dir, { recursive: true, force: true });
  };
  try {
    const problems: ManifestProblem[] = [];
    if (!equalConstantTime(copy.fileSha256, expected.sha256)) {
      // Not decompressed, let alone parsed: a planted object could be a gzip bomb.
      throw untrusted(what, [
        {
          code: 'MANIFEST_SHA256',
          problem: `the object's sha256 ${copy.fileSha256} differs from the one the vault recorded at backup (${expected.sha256}): it was modified or replaced after the backup`,
        },
      ]);
    }
    const fetched = await inflate(copy.dir, copy.fileSha256);
    const signature = signatureOf(fetched, what, problems);
    if (signature !== null) {
      const publicKey = trustedKeys.get(signature.value.keyId);
      if (!equalConstantTime(signature.value.sha256, fetched.bodySha256)) {
        problems.push({ code: 'SIGNATURE', problem: 'the content does not match the digest it was signed over: it was modified after signing' });
      } else if (publicKey === undefined) {
        problems.push({ code: 'SIGNATURE', problem: `it is signed by key ${signature.value.keyId}, which the vault does not list as a backup signing key` });
      } else if (!verifySignature(publicKey, signedMessage(fetched.bodySha256, signature.format), signature.value.value)) {
        problems.push({ code: 'SIGNATURE', problem: 'its signature does not verify' });
      }
    }
    if (problems.length > 0) throw untrusted(what, problems);

    // Authentic from here on: what the backup wrote. Still checked, never assumed.
    const header = member(fetched.head[1], 'snapshot', SnapshotHeaderSchema, what, 2);
    const rawSchema = member(fetched.head[2], 'schema', z.unknown(), what, 3);
    const encapsulations = new Map<string, EncapsulationEntry>();
    for (const { line, no } of fetched.encapsulations) {
      const text = line.toString('utf8', 0, line.length - 1);
      const entry = parseJson(text.endsWith(',') ? text.slice(0, -1) : text, EncapsulationEntrySchema, what, no, 'encapsulation');
      encapsulations.set(entry.id, entry);
    }
    const v4 = signature?.format === MANIFEST_FORMAT;
    const totals: Totals = member(fetched.totalsLine, 'totals', v4 ? TotalsV4Schema : TotalsSchema, what, fetched.lines - 1);
    if (header.id !== expected.snapshotId) {
      problems.push({ code: 'MANIFEST_MISMATCH', problem: `it names snapshot ${header.id}, but is stored as ${expected.snapshotId}` });
    }
    const linkedId = header.previous?.id ?? null;
    const vaultId = expected.previous?.id ?? null;
    if (linkedId !== vaultId) {
      problems.push({ code: 'CHAIN', problem: `it follows ${linkedId ?? 'nothing'}, but the vault records ${vaultId ?? 'nothing'} as the previous snapshot` });
    } else if (header.previous !== null && expected.previous?.sha256 != null && !equalConstantTime(header.previous.sha256, expected.previous.sha256)) {
      problems.push({
        code: 'CHAIN',
        problem: `its link to ${header.previous.id} names sha256 ${header.previous.sha256}, the vault recorded ${expected.previous.sha256}`,
      });
    }
    if (problems.length > 0) throw untrusted(what, problems);
    const schemaCheck = SchemaDescriptionSchema.safeParse(rawSchema);
    if (!schemaCheck.success) {
      const issue = schemaCheck.error.issues[0];
      throw untrusted(what, [
        { code: 'MANIFEST_INVALID', problem: `its schema is not one lethe restores (${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'})` },
      ]);
    }
    return {
      key: what,
      header,
      schema: schemaCheck.data,
      encapsulations,
      totals,
      signature: signature?.value as Signature,
      sha256: fetched.fileSha256,
      format: v4 ? MANIFEST_FORMAT : MANIFEST_FORMAT_V3,
      segments: () => (v4 ? readList(fetched.path, what, 'segments', SegmentEntrySchema) : emptyList()),
      cells: (cellOptions: CellReadOptions = {}) =>
        v4 ? segmentCells(store, readList(fetched.path, what, 'segments', SegmentEntrySchema), cellOptions) : readList(fetched.path, what, 'cells', CellEntrySchema),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

function signatureOf(fetched: Fetched, what: string, problems: ManifestProblem[]): { value: Signature; format: string } | null {
  if (fetched.lines < 0 || fetched.lastLine === undefined) {
    problems.push({ code: 'SIGNATURE', problem: 'the object ends in the middle of a line (truncated?), so it has no signature' });
    return null;
  }
  const first = fetched.head[0]?.toString('utf8') ?? '';
  const format = FIRST_LINES.get(first);
  const text = fetched.lastLine.toString('utf8', 0, fetched.lastLine.length - 1);
  if (format === undefined || !text.startsWith('"signature":') || !text.endsWith('}')) {
    problems.push({ code: 'SIGNATURE', problem: 'it is not a lethe manifest ending in a signature line (truncated or replaced?)' });
    return null;
  }
  try {
    return { value: parseJson(text.slice('"signature":'.length, -1), SignatureSchema, what, fetched.lines, 'signature'), format };
  } catch (err) {
    problems.push({ code: 'SIGNATURE', problem: `its signature line is malformed (${(err as Error).message})` });
    return null;
  }
}

async function* emptyList<T>(): AsyncGenerator<T> {}

/** The entries of the list `name` (`cells` in v3, `segments` in v4) of the verified local copy. */
async function* readList<T>(path: string, what: string, name: string, schema: z.ZodType<T>): AsyncGenerator<T> {
  let lineNo = 0;
  let inList = false;
  const opening = `"${name}":[`;
  for await (const line of copyLines(createReadStream(path))) {
    lineNo += 1;
    const text = line.toString('utf8', 0, line.length - 1);
    if (!inList) {
      if (text === opening) inList = true;
      else if (lineNo > 4) throw invalid(what, lineNo, `expected ${opening}`);
      continue;
    }
    if (text === '],') return;
    yield parseJson(text.endsWith(',') ? text.slice(0, -1) : text, schema, what, lineNo, name === 'cells' ? 'cell' : 'segment');
  }
  throw invalid(what, lineNo, `the ${name} list is not closed`);
}

/** Bytes of uncompressed segment text allowed per listed cell (a cell line is a few hundred). */
const SEGMENT_BYTES_PER_CELL = 4096;

/** Why a segment object cannot be used, as an error carrying the problem. */
class SegmentFailure extends Error {
  constructor(readonly problem: SegmentProblem) {
    super(problem.problem);
  }
}

/**
 * Fetches one segment object into memory (at most the size the manifest lists, plus one
 * byte to notice a longer object), checks its sha256 against the signed manifest before
 * decompressing it (with output capped by its listed cell count: a planted gzip bomb is
 * never inflated past that), and parses and checks every line against the entry.
 */
async function readSegment(store: ObjectStore, entry: SegmentEntry, signal: AbortSignal | undefined): Promise<CellEntry[]> {
  const fail = (code: SegmentProblem['code'], problem: string): SegmentFailure =>
    new SegmentFailure({ segment: entry.id, key: entry.key, code, problem: `segment ${entry.id} (${entry.key}): ${problem}`, cells: entry.cells });
  let source: AsyncIterable<Uint8Array>;
  try {
    source = await store.get(entry.key, signal === undefined ? {} : { signal });
  } catch (err) {
    if (err instanceof LetheError && err.code === ErrorCode.NOT_FOUND) throw fail('SEGMENT_MISSING', 'the object is missing from the store');
    throw err;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const hash = createHash('sha256');
  for await (const chunk of source) {
    size += chunk.length;
    if (size > entry.size) break;
    hash.update(chunk);
    chunks.push(Buffer.from(chunk));
  }
  const actual = hash.digest('hex');
  if (size !== entry.size || !equalConstantTime(actual, entry.sha256)) {
    throw fail('SEGMENT_SHA256', size !== entry.size
      ? `the object is ${size > entry.size ? 'larger' : 'smaller'} than the ${entry.size} bytes the manifest lists: it was modified or replaced after the backup`
      : `the object's sha256 ${actual} differs from the ${entry.sha256} the manifest lists: it was modified or replaced after the backup`);
  }
  // Authentic from here on: what the backup wrote. Still checked, never assumed.
  let text: Buffer;
  try {
    text = await gunzipAsync(Buffer.concat(chunks), { maxOutputLength: 65536 + entry.cells * SEGMENT_BYTES_PER_CELL });
  } catch (err) {
    throw fail('SEGMENT_INVALID', `it does not decompress within the size its cells allow (${(err as Error).message})`);
  }
  const lines = text.toString('utf8').split('\n');
  if (lines.at(-1) !== '') throw fail('SEGMENT_INVALID', 'it does not end with a newline');
  lines.pop();
  if (lines[0] !== `{"format":${JSON.stringify(SEGMENT_FORMAT)},` || lines[2] !== '"cells":[' || lines.at(-1) !== ']}' || !(lines[1] ?? '').startsWith('"segment":') || !(lines[1] ?? '').endsWith(',')) {
    throw fail('SEGMENT_INVALID', 'it is not laid out as a lethe segment');
  }
  const parse = <T>(json: string, schema: z.ZodType<T>, lineNo: number): T => {
    try {
      return parseJson(json, schema, entry.key, lineNo, lineNo === 2 ? 'segment' : 'cell');
    } catch (err) {
      throw fail('SEGMENT_INVALID', (err as Error).message);
    }
  };
  const header = parse((lines[1] as string).slice('"segment":'.length, -1), SegmentHeaderSchema, 2);
  if (header.id !== entry.id || header.table !== entry.table || header.tenant !== entry.tenant || header.period !== entry.period || header.snapshot !== entry.snapshot) {
    throw fail('SEGMENT_INVALID', `it describes segment ${header.id} of snapshot ${header.snapshot}, not what the manifest lists`);
  }
  const cells: CellEntry[] = [];
  let rows = 0;
  let bytesPlain = 0;
  let previousId = '';
  for (let i = 3; i < lines.length - 1; i++) {
    const line = lines[i] as string;
    // Every cell line but the last ends with the comma between list entries.
    const last = i === lines.length - 2;
    if (!last && !line.endsWith(',')) throw fail('SEGMENT_INVALID', `line ${i + 1}: a cell line other than the last has no comma after it`);
    const cell = parse(last ? line : line.slice(0, -1), CellEntrySchema, i + 1);
    if (cell.table !== entry.table || cell.tenant !== entry.tenant || !cell.id.startsWith(`${entry.id}/`)) {
      throw fail('SEGMENT_INVALID', `line ${i + 1}: cell ${cell.id} does not belong to the segment`);
    }
    if (cell.id <= previousId) throw fail('SEGMENT_INVALID', `line ${i + 1}: cell ${cell.id} is out of order or listed twice`);
    previousId = cell.id;
    rows += cell.rows;
    bytesPlain += cell.bytesPlain;
    cells.push(cell);
  }
  if (cells.length !== entry.cells || rows !== entry.rows || bytesPlain !== entry.bytesPlain) {
    throw fail('SEGMENT_INVALID', `it lists ${cells.length} cells, ${rows} rows and ${bytesPlain} plaintext bytes, the manifest ${entry.cells}, ${entry.rows} and ${entry.bytesPlain}`);
  }
  return cells;
}

/** The cells of every segment, fetching one segment at a time and the next while it is used. */
async function* segmentCells(store: ObjectStore, segments: AsyncGenerator<SegmentEntry>, options: CellReadOptions): AsyncGenerator<CellEntry> {
  const fetch = (entry: SegmentEntry): Promise<CellEntry[] | SegmentProblem> =>
    readSegment(store, entry, options.signal).catch((err: unknown) => {
      if (err instanceof SegmentFailure) return err.problem;
      throw err;
    });
  let ahead: Promise<CellEntry[] | SegmentProblem> | undefined;
  const wanted = (entry: SegmentEntry): boolean => options.tenant === undefined || entry.tenant === null || entry.tenant === options.tenant;
  const iterator = segments[Symbol.asyncIterator]();
  const nextWanted = async (): Promise<SegmentEntry | undefined> => {
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return undefined;
      if (wanted(next.value)) return next.value;
    }
  };
  let entry = await nextWanted();
  if (entry !== undefined) ahead = fetch(entry);
  while (entry !== undefined && ahead !== undefined) {
    const fetched = await ahead;
    const following = await nextWanted();
    ahead = following === undefined ? undefined : fetch(following);
    ahead?.catch(() => undefined);
    if (Array.isArray(fetched)) {
      yield* fetched;
    } else if (options.onProblem !== undefined) {
      options.onProblem(fetched);
    } else {
      throw new LetheError(ErrorCode.INTEGRITY, `${fetched.problem}; nothing of it was used`, { details: { segment: fetched.segment, key: fetched.key, code: fetched.code } });
    }
    entry = following;
  }
}
