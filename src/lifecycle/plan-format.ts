import { bytes } from '../cli/format.ts';
import { compareTenants } from '../util/tenant-order.ts';
import type { Plan, PlanAction } from './plan.ts';
import { describeEraseTarget } from './erase-subject.ts';

/**
 * A plan as an operator reads it (`lethe lifecycle plan`): a one-line summary, then the
 * actions grouped by kind (keys per tenant, with the data they make unreadable and why),
 * then what is deferred or blocked and the deletion requests waiting for approval.
 * Returns `Nothing is due.` (plus any deferred, blocked or pending items) when the plan has
 * no action. Plain text, no colours; ends with a newline-free last line.
 */
export function formatPlan(plan: Plan): string {
  const out: string[] = [];
  out.push(`Lifecycle plan at ${plan.now}`);
  out.push(plan.actions.length === 0 ? 'Nothing is due.' : summaryLine(plan));

  const of = <K extends PlanAction['kind']>(kind: K): Extract<PlanAction, { kind: K }>[] =>
    plan.actions.filter((a): a is Extract<PlanAction, { kind: K }> => a.kind === kind);

  const finish = of('finish-request');
  if (finish.length > 0) {
    section(out, `Deletion requests to finish (${finish.length})`);
    for (const a of finish) out.push(`  ${a.requestId}: ${a.reason}`);
  }

  const rewraps = of('rewrap');
  if (rewraps.length > 0) {
    section(out, `Cells to re-wrap for legal holds (${rewraps.length})`);
    for (const [tenant, list] of byTenant(rewraps, (a) => [a.tenant])) {
      out.push(`  tenant ${tenant}:`);
      for (const a of list) out.push(`    ${a.cellKeyId} → case ${a.caseId} (before ${a.replaces} goes): ${a.reason}`);
    }
  }

  const destroys = of('destroy-key');
  if (destroys.length > 0) {
    section(out, `Keys to destroy (${destroys.length})`);
    for (const [tenant, list] of byTenant(destroys, (a) => a.impact.tenants)) {
      const total = list.reduce((n, a) => n + a.impact.bytesPlain, 0);
      out.push(`  tenant ${tenant}: ${list.length} key${list.length === 1 ? '' : 's'}, ${bytes(total)} of data`);
      for (const a of list) {
        const i = a.impact;
        out.push(
          `    ${a.keyId}: ${i.cellKeys} cell key${i.cellKeys === 1 ? '' : 's'}, ${i.cells} cell${i.cells === 1 ? '' : 's'}, ` +
            `${bytes(i.bytesPlain)} in ${i.snapshots} snapshot${i.snapshots === 1 ? '' : 's'}`,
        );
        out.push(`      why: ${a.reason}`);
      }
    }
  }

  const expires = of('expire-snapshot');
  if (expires.length > 0) {
    section(out, `Snapshots to expire (${expires.length})`);
    for (const a of expires) out.push(`  ${a.snapshotId}: ${a.reason}`);
  }

  const extendsLock = of('extend-lock');
  if (extendsLock.length > 0) {
    section(out, `Object locks to extend (${extendsLock.length})`);
    for (const a of extendsLock) out.push(`  ${a.objectKey} until ${a.retainUntil}: ${a.reason}`);
  }

  const deletes = of('delete-object');
  if (deletes.length > 0) {
    const total = deletes.reduce((n, a) => n + a.size, 0);
    section(out, `Objects to delete (${deletes.length}, ${bytes(total)})`);
    for (const kind of ['pack', 'segment', 'key-file', 'vault-backup'] as const) {
      const list = deletes.filter((a) => a.objectKind === kind);
      if (list.length === 0) continue;
      out.push(`  ${kind === 'pack' ? 'packs' : kind === 'segment' ? 'segments' : kind === 'key-file' ? 'key files' : 'vault backups'}:`);
      for (const a of list) out.push(`    ${a.objectKey} (${bytes(a.size)}): ${a.reason}`);
    }
  }

  if (plan.deferred.length > 0) {
    section(out, `Deferred (${plan.deferred.length}): due, but waiting`);
    for (const d of plan.deferred) {
      const what = d.snapshotId !== undefined ? `snapshot ${d.snapshotId}` : (d.objectKey ?? '?');
      out.push(`  ${what}${d.until === null ? '' : ` (until ${d.until})`}: ${d.reason}`);
    }
  }
  if (plan.unknownObjects.length > 0) {
    section(out, `Objects lethe has no record of writing to this store (${plan.unknownObjects.length}): left alone`);
    for (const u of plan.unknownObjects) out.push(`  ${u.objectKey} (${bytes(u.size)}, ${u.lastModified})`);
    out.push('  Look at them: a file someone else put here, or a copy of another store. lifecycle never deletes them.');
  }
  if (plan.blocked.length > 0) {
    section(out, `Blocked by legal holds (${plan.blocked.length})`);
    for (const b of plan.blocked) out.push(`  ${b.keyId} (cases ${b.cases.join(', ')}): ${b.reason}`);
  }
  if (plan.pendingRequests.length > 0) {
    section(out, `Deletion requests waiting for approval (${plan.pendingRequests.length})`);
    for (const r of plan.pendingRequests) {
      const subject = describeEraseTarget(r);
      out.push(`  ${r.id}: ${subject}, requested by ${r.requestedBy} (approve with \`lethe erase approve ${r.id} --actor NAME\`)`);
    }
  }
  return out.join('\n');
}

function summaryLine(plan: Plan): string {
  const s = plan.summary;
  const parts: string[] = [];
  const finish = plan.actions.filter((a) => a.kind === 'finish-request').length;
  if (finish > 0) parts.push(`${finish} deletion request${finish === 1 ? '' : 's'} to finish`);
  if (s.keysToDestroy > 0) parts.push(`${s.keysToDestroy} key${s.keysToDestroy === 1 ? '' : 's'} to destroy`);
  if (s.cellsRewrapped > 0) parts.push(`${s.cellsRewrapped} cell key${s.cellsRewrapped === 1 ? '' : 's'} to re-wrap for holds`);
  if (s.snapshotsToExpire > 0) parts.push(`${s.snapshotsToExpire} snapshot${s.snapshotsToExpire === 1 ? '' : 's'} to expire`);
  const extend = plan.actions.filter((a) => a.kind === 'extend-lock').length;
  if (extend > 0) parts.push(`${extend} lock${extend === 1 ? '' : 's'} to extend`);
  if (s.objectsToDelete > 0) parts.push(`${s.objectsToDelete} object${s.objectsToDelete === 1 ? '' : 's'} (${bytes(s.bytesToDelete)}) to delete`);
  const tenants = s.tenants.length === 0 ? '' : `; tenant${s.tenants.length === 1 ? '' : 's'} ${s.tenants.join(', ')}`;
  return `Due: ${parts.join(', ')}${tenants}.`;
}

function section(out: string[], title: string): void {
  out.push('', `${title}:`);
}

/** Actions grouped by tenant (an action touching several tenants is listed under each), tenants sorted. */
function byTenant<A>(actions: readonly A[], tenantsOf: (a: A) => readonly string[]): [string, A[]][] {
  const groups = new Map<string, A[]>();
  for (const a of actions) {
    const tenants = tenantsOf(a);
    for (const t of tenants.length === 0 ? ['(system)'] : tenants) {
      const list = groups.get(t) ?? [];
      list.push(a);
      groups.set(t, list);
    }
  }
  return [...groups].sort((a, b) => compareTenants(a[0], b[0]));
}
