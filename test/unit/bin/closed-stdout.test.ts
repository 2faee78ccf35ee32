import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const LETHE = fileURLToPath(new URL('../../../bin/lethe.js', import.meta.url));

/**
 * `lethe … --json | head -1`: the reader leaves before lethe prints. The command's result and
 * exit code stand; a closed pipe is not a crash with a stack trace.
 */
describe('a closed stdout', () => {
  it('is no crash: the exit code is the command’s own', async () => {
    const child = spawn(process.execPath, [LETHE, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Closed long before the process has started and printed its help.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(code).toBe(0);
  });
});
