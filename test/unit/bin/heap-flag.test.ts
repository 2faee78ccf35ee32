import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { letheNodeFlags } from '../../../bench/lethe-phase.ts';

const read = (path: string): string => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8');

/**
 * bin/lethe.js caps V8's heap on its shebang line (docs/benchmarks.md). Whatever starts it
 * with an explicit `node` bypasses the shebang and must pass the same flag.
 */
describe('the CLI heap cap', () => {
  const flags = letheNodeFlags();
  const cap = flags.find((f) => f.startsWith('--max-old-space-size='));

  it('is on bin/lethe.js first line', () => {
    expect(cap).toMatch(/^--max-old-space-size=\d+$/);
  });

  it('caps the young generation too', () => {
    expect(flags).toContainEqual(expect.stringMatching(/^--max-semi-space-size=\d+$/));
  });

  it('is passed wherever node is named explicitly, with every flag of the first line', () => {
    const all = flags.join(' ');
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.demo).toBe(`node ${all} bin/lethe.js demo`);
    expect(read('Dockerfile')).toContain(`exec node ${all} /app/bin/lethe.js \\"$@\\"", "lethe"]`);
    for (const unit of ['jobs/systemd/lethe-backup.service', 'jobs/systemd/lethe-verify.service', 'jobs/systemd/lethe-lifecycle.service']) {
      expect(read(unit), unit).toContain(`ExecStart=/usr/bin/node ${all} /opt/lethe/bin/lethe.js `);
    }
  });
});
