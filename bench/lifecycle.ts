import { readFile, writeFile } from 'node:fs/promises';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { REFERENCE_START } from '../src/store/index.ts';
import type { BenchServer, RunSetup } from './fixture.ts';
import { runLethe, type PhaseOptions, type PhaseResult } from './lethe-phase.ts';

/**
 * The lifecycle measurements of issue #3, taken after verify on the run's store: the keys
 * the vault holds per 1,000 users, the erasure of one user (request, then the second
 * person's approval, which executes it), and the monthly retention shred (`lifecycle
 * plan`, then `lifecycle apply` with a messages rule that makes exactly the oldest month
 * due). Each step is a `lethe` child process, measured like the backups.
 */

const DAY_MS = 86_400_000;

const EraseRequestOutput = z.looseObject({ id: z.string() });
const EraseApproveOutput = z.looseObject({ id: z.string(), status: z.string() });
const PlanOutput = z.looseObject({
  actions: z.array(z.looseObject({ kind: z.string() })),
  summary: z.looseObject({ keysToDestroy: z.number() }),
});
const ApplyOutput = z.looseObject({ keysDestroyed: z.number(), durationMs: z.number() });
const RotateOutput = z.looseObject({ epoch: z.number(), rewrapped: z.number(), rewrapMs: z.number() });

export interface KeyCounts {
  readonly users: number;
  readonly dimensionKeys: Readonly<Record<string, number>>;
  readonly cellKeys: number;
  readonly cellKeysByClass: Readonly<Record<string, number>>;
}

export interface LifecycleMeasurements {
  /** Counted after the incremental backup, before anything is destroyed. */
  readonly keys: KeyCounts;
  readonly erase: {
    readonly tenant: string;
    readonly user: string;
    readonly userCellKeys: number;
    readonly request: PhaseResult<z.infer<typeof EraseRequestOutput>>;
    readonly approve: PhaseResult<z.infer<typeof EraseApproveOutput>>;
  };
  readonly retention: {
    readonly rule: string;
    readonly period: string;
    readonly plan: PhaseResult<{ actions: number; keysToDestroy: number }>;
    readonly apply: PhaseResult<z.infer<typeof ApplyOutput>>;
  };
  /**
   * `lethe keys rotate-master` after the shreds (issue 13): every live dimension key re-wrapped
   * to a new master epoch in one vault transaction; `rewrapMs` is that transaction alone, the
   * step's wall time adds process start and the vault backup that follows.
   */
  readonly rotate: PhaseResult<z.infer<typeof RotateOutput>>;
}

/** Dimension keys re-wrapped per second by a master rotation. */
export function rewrapRate(rotate: { rewrapped: number; rewrapMs: number }): number {
  return Math.round((rotate.rewrapped * 1000) / Math.max(1, rotate.rewrapMs));
}

async function withDb<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'lethe bench' });
  // A dropped connection fails the next query instead of ending the run with an unheard 'error' event.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Keys in the vault, by kind, and the store's users. */
async function countKeys(s: BenchServer, setup: RunSetup): Promise<KeyCounts> {
  const users = await withDb(setup.chatUrl, async (c) => {
    const { rows } = await c.query<{ n: string }>('SELECT count(*)::text AS n FROM users');
    return Number(rows[0]?.n ?? 0);
  });
  return withDb(s.server.url(setup.vaultDatabase), async (c) => {
    const dims = await c.query<{ kind: string; n: string }>(
      'SELECT kind, count(*)::text AS n FROM lethe.dimension_keys GROUP BY kind ORDER BY kind',
    );
    const cells = await c.query<{ data_class: string; n: string }>(
      'SELECT data_class, count(*)::text AS n FROM lethe.cell_keys GROUP BY data_class ORDER BY data_class',
    );
    const cellKeysByClass = Object.fromEntries(cells.rows.map((r) => [r.data_class, Number(r.n)]));
    return {
      users,
      dimensionKeys: Object.fromEntries(dims.rows.map((r) => [r.kind, Number(r.n)])),
      cellKeys: Object.values(cellKeysByClass).reduce((a, b) => a + b, 0),
      cellKeysByClass,
    };
  });
}

/** The author of the most messages, and how many cell keys need their user key. */
async function busiestUser(s: BenchServer, setup: RunSetup): Promise<{ tenant: string; user: string; cellKeys: number }> {
  const top = await withDb(setup.chatUrl, async (c) => {
    const { rows } = await c.query<{ tenant: string; user: string }>(
      `SELECT c.tenant_id::text AS tenant, m.sender_id::text AS user
         FROM messages m JOIN conversations c ON c.id = m.conversation_id
        GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1`,
    );
    const found = rows[0];
    if (found === undefined) throw new Error('the seeded store has no messages');
    return found;
  });
  const cellKeys = await withDb(s.server.url(setup.vaultDatabase), async (c) => {
    const { rows } = await c.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM lethe.cell_keys WHERE tenant = $1 AND author = $2',
      [top.tenant, top.user],
    );
    return Number(rows[0]?.n ?? 0);
  });
  return { ...top, cellKeys };
}

/**
 * A messages rule under which exactly the oldest month of the seeded history is due now:
 * its end plus the rule is in the past, the next month's end plus the rule is not.
 */
function oldestMonthRule(now: Date): { rule: string; period: string } {
  const start = REFERENCE_START;
  const end = Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1);
  const days = Math.floor((now.getTime() - end) / DAY_MS);
  if (days < 1) throw new Error('the seeded history is too recent for a retention shred');
  const period = `${start.getUTCFullYear()}-${String(start.getUTCMonth() + 1).padStart(2, '0')}`;
  return { rule: `${days}d`, period };
}

export async function measureLifecycle(
  s: BenchServer,
  setup: RunSetup,
  phase: () => Promise<PhaseOptions>,
  say: (text: string) => void,
): Promise<LifecycleMeasurements> {
  const keys = await countKeys(s, setup);
  const subject = await busiestUser(s, setup);

  say(`erasing user ${subject.user} of tenant ${subject.tenant} (${subject.cellKeys} cell keys)`);
  const request = await runLethe(
    ['erase', 'request', '--tenant', subject.tenant, '--user', subject.user, '--reason', 'bench', '--actor', 'bench-requester'],
    EraseRequestOutput,
    await phase(),
  );
  const approve = await runLethe(
    ['erase', 'approve', request.output.id, '--actor', 'bench-approver'],
    EraseApproveOutput,
    await phase(),
  );

  // The retention rule goes into the run's config only now: the backups ran without one.
  const { rule, period } = oldestMonthRule(new Date());
  const config = parse(await readFile(setup.configFile, 'utf8')) as Record<string, unknown>;
  config['retention'] = { classes: { messages: rule } };
  await writeFile(setup.configFile, stringify(config), { mode: 0o600 });
  say(`retention shred of messages ${period} (rule ${rule}): lifecycle plan, apply`);
  const planned = await runLethe(['lifecycle', 'plan'], PlanOutput, await phase());
  const plan = {
    stats: planned.stats,
    output: { actions: planned.output.actions.length, keysToDestroy: planned.output.summary.keysToDestroy },
  };
  const apply = await runLethe(['lifecycle', 'apply', '--actor', 'bench'], ApplyOutput, await phase());
  say('master key rotation: keys rotate-master');
  const rotate = await runLethe(['keys', 'rotate-master', '--reason', 'bench', '--actor', 'bench'], RotateOutput, await phase());
  return {
    keys,
    erase: { tenant: subject.tenant, user: subject.user, userCellKeys: subject.cellKeys, request, approve },
    retention: { rule, period, plan, apply },
    rotate,
  };
}

/** Keys per 1,000 users: dimension keys by kind, cell keys, and all. */
export function keysPerThousandUsers(k: KeyCounts): Record<string, number> {
  const per = (n: number): number => Math.round((n * 1000) / Math.max(1, k.users));
  const dims = Object.values(k.dimensionKeys).reduce((a, b) => a + b, 0);
  return {
    ...Object.fromEntries(Object.entries(k.dimensionKeys).map(([kind, n]) => [kind, per(n)])),
    dimension: per(dims),
    cell: per(k.cellKeys),
    all: per(dims + k.cellKeys),
  };
}
