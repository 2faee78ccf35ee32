import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';

// Found by the fuzz sweep (test/sweep/fuzz.test.ts): a document nested some thousands of
// levels deep overflowed the stack in the ${ENV} interpolation, a RangeError instead of an
// error naming the fix.
describe('config nesting', () => {
  it('a document nested deeper than any config is CONFIG_INVALID, not a stack overflow', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 20_000; i++) deep = [deep];
    let caught: unknown;
    try {
      parseConfig({ chatStore: deep }, '/', {});
    } catch (err) {
      caught = err;
    }
    expect(isLetheError(caught, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((caught as Error).message).toMatch(/`chatStore\.0\.0\.0.*` nests deeper than 64 levels/);
  });

  it('the nesting a config really has is accepted up to the limit', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 60; i++) deep = [deep];
    let caught: unknown;
    try {
      parseConfig({ chatStore: deep }, '/', {});
    } catch (err) {
      caught = err;
    }
    // Refused by the schema (an array is not a chatStore), not by the depth bound.
    expect(isLetheError(caught, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((caught as Error).message).not.toContain('nests deeper');
  });
});
