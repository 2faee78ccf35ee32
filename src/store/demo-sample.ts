import { ErrorCode, LetheError } from '../errors/index.ts';
import { withClient } from './pg-client.ts';

/** Ids (as decimal strings) a demo can hold, erase or restore. */
export interface DemoSample {
  readonly tenant: string;
  readonly user: string;
  /** The conversation the user wrote most in. */
  readonly conversation: string;
}

/**
 * Picks, from a seeded reference store, a user whose messages span the most months (at
 * least three; among equals the one with the fewest messages, then the lowest id), with
 * their tenant and the conversation they wrote most in. Deterministic for given contents.
 *
 * Throws NOT_FOUND when no user has messages in three or more months, DATABASE otherwise.
 */
export async function demoSample(url: string): Promise<DemoSample> {
  return withClient(url, 'choosing a demo user', async (client) => {
    const { rows } = await client.query<DemoSample>(
      `WITH per_user AS (
         SELECT m.sender_id,
                count(DISTINCT date_trunc('month', m.created_at AT TIME ZONE 'UTC')) AS months,
                count(*) AS messages
           FROM public.messages m
          GROUP BY m.sender_id
       ), chosen AS (
         SELECT p.sender_id FROM per_user p
          WHERE p.months >= 3
          ORDER BY p.months DESC, p.messages, p.sender_id
          LIMIT 1
       )
       SELECT u.tenant_id::text AS tenant, u.id::text AS "user",
              (SELECT m.conversation_id FROM public.messages m WHERE m.sender_id = u.id
                GROUP BY m.conversation_id ORDER BY count(*) DESC, m.conversation_id LIMIT 1)::text AS conversation
         FROM chosen JOIN public.users u ON u.id = chosen.sender_id`,
    );
    const sample = rows[0];
    if (sample === undefined) {
      throw new LetheError(
        ErrorCode.NOT_FOUND,
        'no user has messages in three or more months: seed the store first',
      );
    }
    return sample;
  });
}
