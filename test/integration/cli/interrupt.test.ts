import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectExit, jsonOut, type CliResult } from '../../helpers/lethe-env.ts';
import { createEmbeddedDeployment, queryRows, waitForStatement, type EmbeddedDeployment } from './embedded-deployment.ts';

/**
 * Ctrl-C on a terminal sends SIGINT to the whole foreground process group. The embedded
 * PostgreSQL used to be in it, went away under lethe's connections, and lethe died of an
 * unhandled 'error' event with a Node stack. Now the server runs in a session of its own:
 * lethe gets the signal, stops cleanly and exits 130. A server that really goes away
 * mid-backup gives one line naming the database server, never a stack.
 */

/** No Node stack, no "Unhandled", no JSON log line: what a person sees is lethe's own words. */
function expectCleanStderr(result: CliResult): void {
  expect(result.stderr).not.toMatch(/Unhandled|node:events|^\s+at /m);
  expect(result.stderr).not.toMatch(/^\{/m);
  for (const line of result.stderr.split('\n').filter((l) => l !== '')) expect(line).toMatch(/^lethe: /);
}

describe('an embedded deployment interrupted mid-backup', () => {
  let d: EmbeddedDeployment;

  beforeAll(async () => {
    d = await createEmbeddedDeployment();
    // Seed first: init checks the mapping against the chat store.
    expectExit(await d.cli(['seed', '--scale', 'small']), 0);
    expectExit(await d.cli(['init']), 0);
  });

  afterAll(async () => {
    await d.cleanup();
  });

  it('Ctrl-C (SIGINT to the process group) stops the backup cleanly: exit 130, one message, the server stopped by lethe', async () => {
    const run = d.start(['backup', '--full-read']);
    await waitForStatement(d.url('chat'), 'lethe backup', 'COPY');
    const server = await d.serverPid();
    expect(server).toBeDefined();
    // What a terminal does on Ctrl-C: the signal goes to every process of the foreground group.
    process.kill(-(run.child.pid as number), 'SIGINT');
    const result = await run.done;
    expectExit(result, 130);
    expectCleanStderr(result);
    expect(result.stderr).toContain('lethe: SIGINT received, stopping cleanly');
    expect(result.stderr).toMatch(/^lethe: backup: (cancelled|stopped by SIGINT)/m);
    // lethe stopped the server it started (the pid file goes with it), and nothing is listed as complete.
    expect(await d.serverPid()).toBeUndefined();
    const listed = await d.cli(['snapshots', '--json']);
    expectExit(listed, 0);
    expect((jsonOut(listed) as { snapshots: unknown[] }).snapshots).toEqual([]);
    // The server was still there while lethe stopped: it recorded the run as abandoned (a
    // server that had gone with the Ctrl-C would have left it `running`).
    const statuses = await d.withServer((url) => queryRows(url('lethe_vault'), 'SELECT status FROM lethe.snapshots'));
    expect(statuses).toEqual([{ status: 'abandoned' }]);
  });

  it('a database server that goes away mid-backup gives one line naming it, exit 1', async () => {
    const run = d.start(['backup', '--full-read']);
    await waitForStatement(d.url('chat'), 'lethe backup', 'COPY');
    const server = await d.serverPid();
    if (server === undefined) throw new Error('no embedded server runs');
    // A fast shutdown: the server terminates every connection and exits.
    process.kill(server, 'SIGINT');
    const result = await run.done;
    expectExit(result, 1);
    expectCleanStderr(result);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`a database connection was lost (this config's servers: 127.0.0.1:${d.port} (embedded) for the chat store and vault)`);
    expect(lines[0]).toContain('postgres.log');
  });

  it('the next backup after both starts the server again and completes', async () => {
    const result = await d.cli(['backup', '--json']);
    expectExit(result, 0);
    expect((jsonOut(result) as { cells: number }).cells).toBeGreaterThan(1000);
  });
});
