import type { EraseScope } from './types.ts';

/** What a deletion request names: its tenant (null: every tenant, user requests only), scope and subject. */
export interface EraseTarget {
  readonly tenant: string | null;
  readonly scope: EraseScope;
  readonly subject: string | null;
}

/** True for a request that names a person across every tenant (`erase request --subject U --all-tenants`). */
export function isAllTenants(target: Pick<EraseTarget, 'tenant'>): boolean {
  return target.tenant === null;
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

/** The tenant column of a request in a table or JSON field meant for people: `*` stands for every tenant. */
export function tenantLabel(target: Pick<EraseTarget, 'tenant'>): string {
  return target.tenant ?? '* (every tenant)';
}
