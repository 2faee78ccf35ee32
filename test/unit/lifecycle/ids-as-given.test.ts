import { describe, expect, it } from 'vitest';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import { requestAct } from '../../../src/lifecycle/erase.ts';
import { placeAct } from '../../../src/lifecycle/holds.ts';

/**
 * A chat-store id names a key exactly: a space around it is part of the id. Trimming it
 * silently named another key, so an erasure erased nothing and a hold kept the wrong data.
 */
describe('chat-store ids are taken as given', () => {
  it('an erase request keeps spaces around the tenant and subject, and trims only its reason', () => {
    const act = requestAct({ tenant: ' 7', scope: 'user', subject: '21 ', reason: '  ticket 12 ' });
    expect(act).toMatchObject({ tenant: ' 7', subject: '21 ', reason: 'ticket 12' });
  });

  it('a legal hold keeps spaces around the tenant, user and conversation', () => {
    const { tenant, user, conversation } = placeAct({ caseId: 'CASE-1', tenant: '7 ', user: ' 21', conversation: ' c ', reason: 'litigation' });
    expect({ tenant, user, conversation }).toEqual({ tenant: '7 ', user: ' 21', conversation: ' c ' });
  });

  it('a blank id is still refused with the option to give', () => {
    for (const fn of [
      () => requestAct({ tenant: '  ', scope: 'user', subject: '21', reason: 'r' }),
      () => requestAct({ tenant: '7', scope: 'user', subject: ' ', reason: 'r' }),
      () => placeAct({ caseId: 'CASE-1', tenant: ' ', reason: 'r' }),
      () => placeAct({ caseId: 'CASE-1', tenant: '7', user: '  ', reason: 'r' }),
    ]) {
      expect(fn).toThrow(LetheError);
      try {
        fn();
      } catch (err) {
        expect((err as LetheError).code).toBe(ErrorCode.USAGE);
      }
    }
  });
});
