import { ErrorCode, LetheError } from '../errors/index.ts';
import type { ObjectLock } from './types.ts';

/**
 * Throws STORAGE unless `lock` can be applied at `now`: a known mode and a valid date in
 * the future. S3 rejects a past date itself; checking first gives the same error on every
 * backend.
 */
export function assertLockUsable(lock: ObjectLock, now: Date, doing: string): void {
  // Widened: the value may come from parsed config rather than checked code.
  const mode: string = lock.mode;
  if (mode !== 'GOVERNANCE' && mode !== 'COMPLIANCE') {
    throw new LetheError(
      ErrorCode.STORAGE,
      `${doing}: object lock mode must be GOVERNANCE or COMPLIANCE, got ${JSON.stringify(mode)}`,
    );
  }
  const until = lock.retainUntil.getTime();
  if (Number.isNaN(until) || until <= now.getTime()) {
    const seen = Number.isNaN(until) ? 'an invalid date' : lock.retainUntil.toISOString();
    throw new LetheError(
      ErrorCode.STORAGE,
      `${doing}: object lock retain-until date must be in the future, got ${seen}`,
    );
  }
}

/** The error for touching an object whose lock has not expired, naming the date. */
export function lockedError(doing: string, lock: ObjectLock): LetheError {
  const until = lock.retainUntil.toISOString();
  return new LetheError(
    ErrorCode.STORAGE,
    `${doing}: the object is under ${lock.mode} lock until ${until}; it can be removed after that date`,
    { details: { lockMode: lock.mode, retainUntil: until } },
  );
}

/** True while `lock` still protects its object at `now`. */
export function lockActive(lock: ObjectLock, now: Date): boolean {
  return lock.retainUntil.getTime() > now.getTime();
}

/**
 * Throws STORAGE unless `next` may replace `current` (null: the object has no lock): the
 * same mode and a retain-until date no earlier. A lock is only ever lengthened, on every
 * backend, even where the server itself would allow a GOVERNANCE lock to be shortened.
 */
export function assertLockExtends(
  current: ObjectLock | null,
  next: ObjectLock,
  doing: string,
): void {
  if (current === null) return;
  if (current.mode !== next.mode) {
    throw new LetheError(
      ErrorCode.STORAGE,
      `${doing}: the object is under ${current.mode} lock; its mode cannot change to ${next.mode}. ` +
        `Extend it with mode ${current.mode}`,
      { details: { lockMode: current.mode, requestedMode: next.mode } },
    );
  }
  if (next.retainUntil.getTime() < current.retainUntil.getTime()) {
    throw new LetheError(
      ErrorCode.STORAGE,
      `${doing}: the object is locked until ${current.retainUntil.toISOString()}; a lock cannot be ` +
        `shortened to ${next.retainUntil.toISOString()}. Give a date on or after the current one`,
      {
        details: {
          retainUntil: current.retainUntil.toISOString(),
          requested: next.retainUntil.toISOString(),
        },
      },
    );
  }
}
