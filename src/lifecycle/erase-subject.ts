import type { EraseScope } from './types.ts';

/** What a deletion request names: its tenant (null: every tenant, user requests only), scope and subject. */
export interface EraseTarget {
  readonly tenant: string | null;
  readonly scope: EraseScope;
  readonly subject: string | null;
}

/**
 * A request's subject in words, the same in every report that lists requests: `user 42 of
 * tenant 7`, `conversation C of tenant 7`, `all of tenant 7`, or `user 42 in every tenant`.
 */
export function describeEraseTarget(target: EraseTarget): string {
  const subject = target.subject ?? '?';
  if (target.tenant === null) return `${target.scope} ${subject} in every tenant`;
  return target.scope === 'tenant' ? `all of tenant ${target.tenant}` : `${target.scope} ${subject} of tenant ${target.tenant}`;
}

/** `value` as one shell word: as is when it is plain, else single-quoted, for commands lethe suggests. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9._@:+/=-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}
