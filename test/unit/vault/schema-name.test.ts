import { describe, expect, it } from 'vitest';
import { isLetheError } from '../../../src/errors/index.ts';
import { checkSchemaName } from '../../../src/vault/index.ts';

describe('checkSchemaName', () => {
  it.each(['lethe', 'lethe_test_1', '_x', 'a'.repeat(63)])('accepts %s', (name) => {
    expect(checkSchemaName(name)).toBe(name);
  });

  it.each(['', 'Lethe', '1abc', 'a"b', 'x; DROP SCHEMA public', 'lethe-prod', 'a'.repeat(64)])(
    'refuses %j, since it would be spliced into SQL',
    (name) => {
      try {
        checkSchemaName(name);
        expect.unreachable();
      } catch (err) {
        expect(isLetheError(err, 'CONFIG_INVALID')).toBe(true);
        expect((err as Error).message).toContain(JSON.stringify(name));
      }
    },
  );
});
