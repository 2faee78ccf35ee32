import { describe, expect, it } from 'vitest';
import { closestCommand, editDistance, unknownCommandMessage } from '../../../src/cli/unknown-command.ts';

const NAMES = ['init', 'backup', 'snapshots', 'verify', 'restore', 'hold place', 'hold release', 'hold list', 'erase request', 'erase approve', 'lifecycle plan', 'lifecycle apply'];

describe('unknown commands', () => {
  it('counts edits, a swap of neighbours as one', () => {
    expect(editDistance('backup', 'backup')).toBe(0);
    expect(editDistance('bakcup', 'backup')).toBe(1);
    expect(editDistance('verfy', 'verify')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('suggests the one close command, or none when nothing is close or two are as close', () => {
    expect(closestCommand('snapshot', NAMES)).toBe('snapshots');
    expect(closestCommand('Verify', NAMES)).toBe('verify');
    expect(closestCommand('lifecyle', NAMES)).toBe('lifecycle');
    expect(closestCommand('xyz', NAMES)).toBeUndefined();
    expect(closestCommand('restorx', ['restore', 'restorz'])).toBeUndefined();
  });

  it('names the word, and for a group word its subcommands', () => {
    expect(unknownCommandMessage(['snapshot'], NAMES)).toBe('unknown command "snapshot" (did you mean `lethe snapshots`?)\nusage: lethe <command> [options]   (`lethe help` lists the commands)');
    expect(unknownCommandMessage(['lifecycle', 'aply'], NAMES)).toBe(
      'unknown command "lifecycle aply": lifecycle takes plan, apply (did you mean `lethe lifecycle apply`?)\nusage: lethe lifecycle <plan|apply> [options]',
    );
    expect(unknownCommandMessage(['hold', '--json'], NAMES)).toMatch(/^`lethe hold` needs a subcommand: hold takes place, release, list\n/);
    expect(unknownCommandMessage(['--config', 'x.yaml', 'backup'], NAMES)).toMatch(/^an option before the command \("--config"\): put options after it\n/);
  });
});
