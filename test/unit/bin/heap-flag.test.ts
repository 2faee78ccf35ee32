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

  it('is passed wherever node is named explicitly', () => {
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.demo).toBe(`node ${cap ?? ''} bin/lethe.js demo`);
    expect(read('Dockerfile')).toContain(`ENTRYPOINT ["node", "${cap ?? ''}", "/app/bin/lethe.js"]`);
    for (const unit of ['jobs/systemd/lethe-backup.service', 'jobs/systemd/lethe-verify.service']) {
      expect(read(unit), unit).toContain(`ExecStart=/usr/bin/node ${cap ?? ''} /opt/lethe/bin/lethe.js `);
    }
  });
});
