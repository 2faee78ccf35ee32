import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  PlanCellKey,
  PlanDimensionKey,
  PlanHeldCellKey,
  PlanInput,
  PlanObject,
  PlanSnapshot,
} from '../../../src/lifecycle/plan.ts';
import { RetentionSchema } from '../../../src/lifecycle/rules.ts';
import type { EraseRequest, Hold } from '../../../src/lifecycle/types.ts';

/**
 * Golden planner fixtures: `golden/<name>.input.json` (a hand-written PlanInput in a short
 * form) and `golden/<name>.plan.json` (the expected plan, compared exactly).
 *
 * The short form, so fixtures stay readable:
 * - `rules` is written as the config's `retention:` section and parsed by its schema;
 * - ISO-8601 instants (`2026-03-01T00:00:00Z`) anywhere become Dates;
 * - missing lists are empty; `objectLock` defaults to null;
 * - a dimension key named by a cell key or held cell key but not listed is added, alive;
 * - cell keys: `usage` defaults to 2 cells, 1,000 bytes, 1 snapshot; `author`,
 *   `conversation` default to null;
 * - holds: `user`, `conversation`, `from`, `to`, `releasedAt`, `releasedBy` default to null;
 *   `id` to its position + 1; reason/placedBy/placedAt to fixed values;
 * - erase requests: approval fields default to null, `requestedAt` to 2026-01-01;
 * - snapshots: `status` complete, `startedAt` = completedAt, `manifestKey`
 *   `snapshots/<id>.json` when complete, `manifestRetainUntil` null;
 * - snapshots also `manifestInStore` true;
 * - objects: `lastModified` 2026-01-01, `retainUntil` null, `referencedBy` and `tenants` [],
 *   `recorded` true.
 */

export const GOLDEN_DIR = join(dirname(fileURLToPath(import.meta.url)), 'golden');

const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?Z$/;

/** JSON.parse reviver turning ISO instants into Dates. */
export function reviveDates(_key: string, value: unknown): unknown {
  return typeof value === 'string' && ISO_INSTANT.test(value) ? new Date(value) : value;
}

/** The names of every fixture (`<name>.input.json`), sorted. */
export function goldenNames(): string[] {
  return readdirSync(GOLDEN_DIR)
    .filter((f) => f.endsWith('.input.json'))
    .map((f) => f.slice(0, -'.input.json'.length))
    .sort();
}

type Raw = Record<string, unknown>;
const list = (v: unknown): Raw[] => (Array.isArray(v) ? (v as Raw[]) : []);
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- a typed cast of fixture JSON
const orNull = <T>(v: unknown): T | null => (v === undefined ? null : (v as T));
const FIXED = new Date('2026-01-01T00:00:00Z');

function kindOf(id: string): PlanDimensionKey['kind'] {
  if (id === 'system') return 'system';
  return id.slice(0, id.indexOf(':')) as PlanDimensionKey['kind'];
}

function tenantOf(id: string): string | null {
  if (id === 'system') return null;
  const rest = id.slice(id.indexOf(':') + 1);
  return decodeURIComponent(rest.split('/')[0] ?? '');
}

/** Reads and expands `golden/<name>.input.json`. */
export function loadGoldenInput(name: string): PlanInput {
  const raw = JSON.parse(readFileSync(join(GOLDEN_DIR, `${name}.input.json`), 'utf8'), reviveDates) as Raw;
  return expandInput(raw);
}

/** Expands the short form described above into a PlanInput. */
export function expandInput(raw: Raw): PlanInput {
  const cellKeys: PlanCellKey[] = list(raw['cellKeys']).map((c) => ({
    id: c['id'] as string,
    tenant: orNull<string>(c['tenant']),
    class: c['class'] as string,
    period: orNull<string>(c['period']),
    author: orNull<string>(c['author']),
    conversation: orNull<string>(c['conversation']),
    dimensionIds: c['dimensionIds'] as string[],
    usage: (c['usage'] as PlanCellKey['usage'] | undefined) ?? { cells: 2, bytesPlain: 1000, snapshots: 1 },
  }));
  const heldCellKeys = list(raw['heldCellKeys']) as unknown as PlanHeldCellKey[];
  const dims = new Map<string, PlanDimensionKey>();
  for (const d of list(raw['dimensionKeys'])) {
    const id = d['id'] as string;
    dims.set(id, {
      id,
      kind: (d['kind'] as PlanDimensionKey['kind'] | undefined) ?? kindOf(id),
      tenant: d['tenant'] === undefined ? tenantOf(id) : (d['tenant'] as string | null),
      destroyed: d['destroyed'] === true,
    });
  }
  for (const id of [...cellKeys.flatMap((c) => c.dimensionIds), ...heldCellKeys.flatMap((h) => h.dimensionIds)]) {
    if (!dims.has(id)) dims.set(id, { id, kind: kindOf(id), tenant: tenantOf(id), destroyed: false });
  }
  const holds: Hold[] = list(raw['holds']).map((h, i) => ({
    id: (h['id'] as number | undefined) ?? i + 1,
    caseId: h['caseId'] as string,
    tenant: h['tenant'] as string,
    user: orNull<string>(h['user']),
    conversation: orNull<string>(h['conversation']),
    from: orNull<Date>(h['from']),
    to: orNull<Date>(h['to']),
    reason: (h['reason'] as string | undefined) ?? 'litigation',
    placedBy: (h['placedBy'] as string | undefined) ?? 'legal',
    placedAt: (h['placedAt'] as Date | undefined) ?? FIXED,
    releasedAt: orNull<Date>(h['releasedAt']),
    releasedBy: orNull<string>(h['releasedBy']),
  }));
  const eraseRequests: EraseRequest[] = list(raw['eraseRequests']).map((r) => ({
    id: r['id'] as string,
    tenant: r['tenant'] as string,
    scope: r['scope'] as EraseRequest['scope'],
    subject: orNull<string>(r['subject']),
    reason: (r['reason'] as string | undefined) ?? 'GDPR article 17',
    requestedBy: (r['requestedBy'] as string | undefined) ?? 'alice',
    requestedAt: (r['requestedAt'] as Date | undefined) ?? FIXED,
    status: r['status'] as EraseRequest['status'],
    approvedBy: orNull<string>(r['approvedBy']),
    approvedAt: orNull<Date>(r['approvedAt']),
    executedAt: orNull<Date>(r['executedAt']),
  }));
  const snapshots: PlanSnapshot[] = list(raw['snapshots']).map((s) => {
    const status = (s['status'] as PlanSnapshot['status'] | undefined) ?? 'complete';
    const completedAt = orNull<Date>(s['completedAt']);
    return {
      id: s['id'] as string,
      status,
      startedAt: (s['startedAt'] as Date | undefined) ?? completedAt ?? FIXED,
      completedAt,
      manifestKey:
        s['manifestKey'] === undefined ? (status === 'running' ? null : `snapshots/${s['id'] as string}.json`) : (s['manifestKey'] as string | null),
      manifestRetainUntil: orNull<Date>(s['manifestRetainUntil']),
      manifestInStore: (s['manifestInStore'] as boolean | undefined) ?? true,
    };
  });
  const objects: PlanObject[] = list(raw['objects']).map((o) => ({
    key: o['key'] as string,
    kind: o['kind'] as PlanObject['kind'],
    size: o['size'] as number,
    lastModified: (o['lastModified'] as Date | undefined) ?? FIXED,
    retainUntil: orNull<Date>(o['retainUntil']),
    referencedBy: (o['referencedBy'] as string[] | undefined) ?? [],
    tenants: (o['tenants'] as string[] | undefined) ?? [],
    recorded: (o['recorded'] as boolean | undefined) ?? true,
  }));
  return {
    now: raw['now'] as Date,
    rules: RetentionSchema.parse(raw['rules'] ?? {}),
    objectLock: orNull<PlanInput['objectLock']>(raw['objectLock']),
    dimensionKeys: [...dims.values()],
    cellKeys,
    heldCellKeys,
    holds,
    eraseRequests,
    snapshots,
    objects,
  };
}

/** The expected plan, as committed. */
export function loadGoldenPlan(name: string): unknown {
  return JSON.parse(readFileSync(join(GOLDEN_DIR, `${name}.plan.json`), 'utf8'));
}
