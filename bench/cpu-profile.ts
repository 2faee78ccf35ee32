import { readdir, readFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from './repo-root.ts';

/**
 * Self time per function from the V8 CPU profiles that `node --cpu-prof` writes: where a
 * lethe phase spends its CPU, without opening DevTools.
 */

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface HotFunction {
  /** `name (file:line)`; V8's pseudo-frames keep their names, e.g. `(garbage collector)`. */
  readonly where: string;
  readonly selfMs: number;
  /** Share of the sampled time, idle excluded. */
  readonly share: number;
}

export interface ProfileSummary {
  /** Sampled main-thread time, idle excluded. */
  readonly busyMs: number;
  readonly top: readonly HotFunction[];
}

const ROOT = `${REPO_ROOT}${sep}`;

function shortUrl(url: string): string {
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const local = path.startsWith(ROOT) ? path.slice(ROOT.length) : path;
  const modules = local.lastIndexOf('node_modules/');
  return modules >= 0 ? local.slice(modules + 'node_modules/'.length) : local;
}

function label(frame: CallFrame): string {
  const name = frame.functionName === '' ? '(anonymous)' : frame.functionName;
  if (frame.url === '') return name;
  return `${name} (${shortUrl(frame.url)}:${frame.lineNumber + 1})`;
}

/**
 * Sums self time by function over the main-thread profiles in `dir` (files named
 * `CPU.<date>.<time>.<pid>.0.<seq>.cpuprofile`; worker threads, such as a module loader's,
 * are left out) and returns the `top` heaviest. A sample's time is the gap to the next one.
 */
export async function summarizeProfiles(dir: string, top: number): Promise<ProfileSummary> {
  const files = (await readdir(dir)).filter((f) =>
    /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f),
  );
  const self = new Map<string, number>();
  for (const file of files) {
    const profile = JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile;
    const labels = new Map(profile.nodes.map((n) => [n.id, label(n.callFrame)]));
    for (let i = 0; i < profile.samples.length; i++) {
      const where = labels.get(profile.samples[i] ?? -1) ?? '(unknown)';
      const us = profile.timeDeltas[i + 1] ?? 0;
      self.set(where, (self.get(where) ?? 0) + us / 1000);
    }
  }
  self.delete('(idle)');
  const busyMs = [...self.values()].reduce((a, b) => a + b, 0);
  const ranked = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    busyMs,
    top: ranked.map(([where, selfMs]) => ({
      where,
      selfMs,
      share: busyMs === 0 ? 0 : selfMs / busyMs,
    })),
  };
}
