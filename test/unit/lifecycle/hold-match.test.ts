import { describe, expect, it } from 'vitest';
import { caseKeyId, holdCovers, holdsBlockingDestruction } from '../../../src/lifecycle/hold-match.ts';
import type { CellKeyFacts, Hold } from '../../../src/lifecycle/types.ts';

function hold(over: Partial<Hold> = {}): Hold {
  return {
    id: 1,
    caseId: 'CASE-1',
    tenant: '3',
    user: null,
    conversation: null,
    from: null,
    to: null,
    reason: 'litigation',
    placedBy: 'legal',
    placedAt: new Date('2026-01-01T00:00:00Z'),
    releasedAt: null,
    releasedBy: null,
    ...over,
  };
}

function cell(over: Partial<CellKeyFacts> = {}): CellKeyFacts {
  const period = over.period ?? '2025-06';
  const author = over.author === undefined ? '7' : over.author;
  return {
    id: `cell:3/messages/${period}/${author ?? '-'}`,
    tenant: '3',
    class: 'messages',
    period,
    author,
    conversation: '11',
    dimensionIds: [`period:3/messages/${period}`, `user:3/${author ?? '-'}`, 'conversation:3/11', 'tenant:3'],
    ...over,
  };
}

describe('holdCovers', () => {
  it('matches on tenant, author, conversation and overlapping dates', () => {
    expect(holdCovers(hold(), cell())).toBe(true);
    expect(holdCovers(hold({ tenant: '4' }), cell())).toBe(false);
    expect(holdCovers(hold({ user: '7' }), cell())).toBe(true);
    expect(holdCovers(hold({ user: '8' }), cell())).toBe(false);
    expect(holdCovers(hold({ user: '7' }), cell({ author: null }))).toBe(false);
    expect(holdCovers(hold({ conversation: '11' }), cell())).toBe(true);
    expect(holdCovers(hold({ conversation: '12' }), cell())).toBe(false);
    expect(holdCovers(hold({ from: new Date('2025-06-30T00:00:00Z') }), cell())).toBe(true);
    expect(holdCovers(hold({ from: new Date('2025-07-01T00:00:00Z') }), cell())).toBe(false);
  });

  it('never covers system cells', () => {
    expect(holdCovers(hold(), cell({ tenant: null }))).toBe(false);
  });
});

describe('caseKeyId', () => {
  it('encodes tenant and case like every other key id', () => {
    expect(caseKeyId('3', 'CASE-1')).toBe('case:3/CASE-1');
    expect(caseKeyId('a/b', 'X')).toBe('case:a%2Fb/X');
  });
});

describe('holdsBlockingDestruction', () => {
  const held = hold({ user: '7' });

  it('blocks a key whose destruction would make held data unreadable', () => {
    expect(holdsBlockingDestruction('user:3/7', [held], [cell()])).toEqual([held]);
    expect(holdsBlockingDestruction('tenant:3', [held], [cell()])).toEqual([held]);
    expect(holdsBlockingDestruction('user:3/8', [held], [cell()])).toEqual([]);
  });

  it('ignores released holds', () => {
    expect(holdsBlockingDestruction('user:3/7', [{ ...held, releasedAt: new Date(), releasedBy: 'legal' }], [cell()])).toEqual([]);
  });

  it('does not block a key the case re-wrap no longer needs', () => {
    const rewraps = new Map([[cell().id, [[caseKeyId('3', 'CASE-1'), 'user:3/7', 'conversation:3/11', 'tenant:3']]]]);
    expect(holdsBlockingDestruction('period:3/messages/2025-06', [held], [cell()], rewraps)).toEqual([]);
    expect(holdsBlockingDestruction('user:3/7', [held], [cell()], rewraps)).toEqual([held]);
  });
});
