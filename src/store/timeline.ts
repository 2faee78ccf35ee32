import { CumulativeTable, Prng, zipfWeights } from './random.ts';
import { REFERENCE_END, REFERENCE_START } from './reference-schema.ts';
import type { ScaleParams } from './scale.ts';
import type { Conversation, User, World } from './world.ts';

const DAY_MS = 86_400_000;
const PURPOSE_TIMELINE = 2;

/** One message's facts; its text and attachment bytes are derived later from (seed, id). */
export interface MessageSkeleton {
  readonly id: number;
  readonly conversation: Conversation;
  readonly sender: User;
  /** 0 when the message is not a reply. */
  readonly threadRootId: number;
  readonly createdAtMs: number;
  /** How many earlier versions the message has (rows in message_edits). */
  readonly edits: number;
  readonly attachment: boolean;
}

/**
 * Every message of the store in id order, which is also time order, from the history start
 * to {@link REFERENCE_END}. Volume grows over the two years, dips at weekends and bursts on
 * some days; within a conversation a few members send most messages; ~15% of messages
 * reply in a thread. The sequence depends only on (world, params, seed), so it can be
 * replayed — once for messages, again for edits and attachments — instead of buffered.
 */
export function* timeline(
  world: World,
  params: ScaleParams,
  seed: number,
): Generator<MessageSkeleton> {
  const rng = new Prng(seed, 0, PURPOSE_TIMELINE);
  const start = REFERENCE_START.getTime();
  const end = REFERENCE_END.getTime();
  const days = Math.ceil((end - start) / DAY_MS);
  const counts = dailyCounts(rng, days, params.messages, start);
  const maxConversations = world.tenants.reduce((m, t) => Math.max(m, t.conversations.length), 1);
  const conversationZipf = new CumulativeTable(zipfWeights(maxConversations, 1.1));
  const maxMembers = world.conversations.reduce((m, c) => Math.max(m, c.members.length), 2);
  const senderZipf = new CumulativeTable(zipfWeights(maxMembers, 1.3));
  const activeThread = new Float64Array(world.conversations.length + 1);
  let id = 0;
  for (let day = 0; day < days; day++) {
    const dayStart = start + day * DAY_MS;
    const times = new Float64Array(counts[day] ?? 0);
    for (let i = 0; i < times.length; i++) times[i] = Math.min(end, dayStart + timeOfDay(rng));
    times.sort();
    for (const createdAtMs of times) {
      const tenant = world.tenants[world.tenantTable.sample(rng)];
      if (tenant === undefined) throw new RangeError('tenant table out of range');
      const conversation =
        tenant.conversations[
          conversationZipf.sample(rng, upperBound(tenant.eligibleFrom, createdAtMs))
        ];
      if (conversation === undefined)
        throw new RangeError(`tenant ${tenant.id} has no conversation`);
      const sender = conversation.members[senderZipf.sample(rng, conversation.members.length)];
      if (sender === undefined)
        throw new RangeError(`conversation ${conversation.id} has no members`);
      id++;
      const root = activeThread[conversation.id] ?? 0;
      const threadRootId = root !== 0 && rng.chance(0.15) ? root : 0;
      if (threadRootId === 0 && rng.chance(0.25)) activeThread[conversation.id] = id;
      const edits = rng.chance(params.editRate) ? (rng.chance(0.7) ? 1 : rng.range(2, 3)) : 0;
      const attachment = rng.chance(params.attachmentRate);
      yield { id, conversation, sender, threadRootId, createdAtMs, edits, attachment };
    }
  }
}

/** Messages per day, summing exactly to `total`. */
function dailyCounts(rng: Prng, days: number, total: number, start: number): Uint32Array {
  const weights = new Float64Array(days);
  let sum = 0;
  for (let d = 0; d < days; d++) {
    const weekday = new Date(start + d * DAY_MS).getUTCDay();
    const growth = 0.5 + d / days;
    const weekend = weekday === 0 || weekday === 6 ? 0.3 : 1;
    const burst = rng.chance(0.04) ? 2 + rng.next() * 2 : 1;
    const noise = 0.85 + rng.next() * 0.3;
    weights[d] = growth * weekend * burst * noise;
    sum += weights[d] ?? 0;
  }
  const counts = new Uint32Array(days);
  let cumulative = 0;
  let assigned = 0;
  for (let d = 0; d < days; d++) {
    cumulative += weights[d] ?? 0;
    const target = d === days - 1 ? total : Math.round((total * cumulative) / sum);
    counts[d] = target - assigned;
    assigned = target;
  }
  return counts;
}

/** Milliseconds into a UTC day: mostly office hours, some around the clock. */
function timeOfDay(rng: Prng): number {
  if (rng.chance(0.25)) return rng.int(DAY_MS);
  const hours = Math.min(23.999, Math.max(0, 14.5 + rng.normal() * 3.5));
  return Math.floor(hours * 3_600_000);
}

/** Number of entries of a sorted array that are ≤ value. */
function upperBound(sorted: Float64Array, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] ?? 0) <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
