import { LOCALES, TENANT_NAMES, TITLE_WORDS, languageOf, type Language } from './corpus.ts';
import { CumulativeTable, Prng, zipfWeights } from './random.ts';
import { REFERENCE_END, REFERENCE_START } from './reference-schema.ts';
import type { ScaleParams } from './scale.ts';

const DAY_MS = 86_400_000;
/** A conversation receives messages from this long after it was created. */
const ELIGIBLE_AFTER_MS = 3_600_000;

export type ConversationKind = 'dm' | 'group' | 'channel';

export interface User {
  readonly id: number;
  readonly tenantId: number;
  readonly handle: string;
  readonly displayName: string;
  readonly email: string;
  readonly locale: string;
  readonly language: Language;
  readonly createdAtMs: number;
}

export interface Conversation {
  readonly id: number;
  readonly tenantId: number;
  readonly kind: ConversationKind;
  readonly title: string | null;
  readonly createdBy: number | null;
  readonly createdAtMs: number;
  /** Members in "activity" order: the first ones are the likeliest senders. */
  readonly members: readonly User[];
}

export interface Tenant {
  readonly id: number;
  readonly slug: string;
  readonly name: string;
  readonly createdAtMs: number;
  readonly users: readonly User[];
  /** Sorted by creation time; the first one exists before the history starts. */
  readonly conversations: readonly Conversation[];
  /** Per conversation (same order): the time from which it can receive messages. */
  readonly eligibleFrom: Float64Array;
}

/** Everything about a seeded store except its messages; small enough to hold in memory. */
export interface World {
  readonly tenants: readonly Tenant[];
  /** Picks a tenant for a message: Zipf-skewed, a few tenants get most traffic. */
  readonly tenantTable: CumulativeTable;
  readonly users: readonly User[];
  /** In id order. */
  readonly conversations: readonly Conversation[];
}

const PURPOSE_WORLD = 1;

/**
 * Builds tenants, users, conversations and memberships for `params`, deterministically
 * from `seed`. Tenant sizes follow Zipf (s = 1.5), so the largest tenant is more than ten
 * times the median; within a tenant, a few users are members (and senders) of most
 * conversations.
 */
export function buildWorld(params: ScaleParams, seed: number): World {
  const rng = new Prng(seed, 0, PURPOSE_WORLD);
  const weights = Array.from(zipfWeights(params.tenants, 1.5));
  shuffle(rng, weights);
  const totalWeight = weights.reduce((a, b) => a + b, 0);
  const userZipf = new CumulativeTable(zipfWeights(params.users, 1.0));

  const tenants: Tenant[] = [];
  const users: User[] = [];
  const drafts: ConversationDraft[] = [];
  for (let i = 0; i < params.tenants; i++) {
    const share = (weights[i] ?? 0) / totalWeight;
    const tenant = draftTenant(rng, i + 1, share, params, users.length + 1);
    users.push(...tenant.users);
    const count = Math.max(3, Math.round(params.conversations * share));
    for (let j = 0; j < count; j++)
      drafts.push(draftConversation(rng, tenant, j, params, userZipf));
    tenants.push(tenant);
  }

  // Conversation ids follow creation time, as in a store that allocates ids on insert.
  drafts.sort(
    (a, b) => a.createdAtMs - b.createdAtMs || a.tenantId - b.tenantId || a.index - b.index,
  );
  const conversations = drafts.map((d, i): Conversation => ({ ...d, id: i + 1 }));
  const byTenant = new Map<number, Conversation[]>();
  for (const c of conversations) {
    const list = byTenant.get(c.tenantId) ?? [];
    list.push(c);
    byTenant.set(c.tenantId, list);
  }
  const finished = tenants.map((t): Tenant => {
    const list = byTenant.get(t.id) ?? [];
    return {
      ...t,
      conversations: list,
      eligibleFrom: Float64Array.from(list, (c) => c.createdAtMs + ELIGIBLE_AFTER_MS),
    };
  });
  return { tenants: finished, tenantTable: new CumulativeTable(weights), users, conversations };
}

function draftTenant(
  rng: Prng,
  id: number,
  share: number,
  params: ScaleParams,
  firstUserId: number,
): Tenant {
  const [stem, baseName] = TENANT_NAMES[(id - 1) % TENANT_NAMES.length] ?? ['tenant', 'Tenant'];
  const round = Math.floor((id - 1) / TENANT_NAMES.length);
  const name = round === 0 ? baseName : `${baseName} ${round + 1}`;
  const slug = `${stem}-${id}`;
  const createdAtMs = REFERENCE_START.getTime() - rng.range(30, 900) * DAY_MS - rng.int(DAY_MS);
  const tenantLocale = rng.pick(LOCALES);
  const count = Math.max(4, Math.round(params.users * share));
  const handles = new Set<string>();
  const users: User[] = [];
  for (let k = 0; k < count; k++) {
    const locale = rng.chance(0.7) ? tenantLocale : rng.pick(LOCALES);
    const language = languageOf(locale);
    const [givenRoman, given] = rng.pick(language.given);
    const [familyRoman, family] = rng.pick(language.family);
    let handle = `${givenRoman}.${familyRoman}`;
    for (let n = 2; handles.has(handle); n++) handle = `${givenRoman}.${familyRoman}${n}`;
    handles.add(handle);
    const displayName = language.familyFirst
      ? `${family}${language.code === 'ja' ? ' ' : ''}${given}`
      : `${given} ${family}`;
    users.push({
      id: firstUserId + k,
      tenantId: id,
      handle,
      displayName,
      email: `${handle}@${slug}.example.com`,
      locale,
      language,
      createdAtMs: createdAtMs + rng.int(REFERENCE_START.getTime() - createdAtMs),
    });
  }
  return {
    id,
    slug,
    name,
    createdAtMs,
    users,
    conversations: [],
    eligibleFrom: new Float64Array(0),
  };
}

interface ConversationDraft extends Omit<Conversation, 'id'> {
  readonly index: number;
}

function draftConversation(
  rng: Prng,
  tenant: Tenant,
  index: number,
  params: ScaleParams,
  userZipf: CumulativeTable,
): ConversationDraft {
  const start = REFERENCE_START.getTime();
  const end = REFERENCE_END.getTime();
  // A fifth of the conversations (always the first, #general) predate the history window.
  const early = index === 0 || rng.chance(0.2);
  const createdAtMs = early
    ? tenant.createdAtMs + rng.int(start - DAY_MS - tenant.createdAtMs)
    : start + rng.int(end - DAY_MS - start);
  const roll = rng.next();
  const kind: ConversationKind =
    index === 0 ? 'channel' : roll < 0.5 ? 'dm' : roll < 0.85 ? 'group' : 'channel';
  const n = tenant.users.length;
  const size =
    index === 0
      ? Math.min(n, params.maxChannelMembers)
      : kind === 'dm'
        ? 2
        : kind === 'group'
          ? rng.range(3, Math.min(12, n))
          : rng.range(Math.min(10, n), Math.min(params.maxChannelMembers, n));
  const members = sampleDistinct(rng, userZipf, n, size).map((i) => tenant.users[i] as User);
  const title =
    index === 0
      ? 'general'
      : kind === 'dm'
        ? null
        : `${rng.pick(TITLE_WORDS)}${rng.chance(0.5) ? `-${rng.range(2, 99)}` : ''}`;
  const createdBy = kind === 'channel' && rng.chance(0.3) ? null : (members[0]?.id ?? null);
  return { index, tenantId: tenant.id, kind, title, createdBy, createdAtMs, members };
}

/** k distinct indices in [0, n), Zipf-biased towards low indices (active users). */
function sampleDistinct(rng: Prng, table: CumulativeTable, n: number, k: number): number[] {
  if (k * 2 >= n) {
    const all = Array.from({ length: n }, (_, i) => i);
    shuffle(rng, all);
    return all.slice(0, k);
  }
  const picked = new Set<number>();
  while (picked.size < k) picked.add(table.sample(rng, n));
  return [...picked];
}

function shuffle(rng: Prng, items: unknown[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
}
