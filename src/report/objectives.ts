import type { ReportObjectives } from './document.ts';

/** Where the objectives live in lethe.yaml. */
export const OBJECTIVES_FIELD = 'daemon.objectives';

/** A positive number of minutes as whole seconds; null for anything else. */
function minutesToSeconds(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value > 0
    ? Math.round(value * 60)
    : null;
}

/**
 * The recovery objectives a report measures against: `daemon.objectives.rpoMinutes` and
 * `rtoMinutes` of the validated config, each null when not set. Read structurally, so a
 * config without a `daemon` section (a CLI-only deployment) simply has no objectives.
 * Never throws.
 */
export function reportObjectives(config: unknown): ReportObjectives {
  const daemon = (config as { daemon?: unknown } | null)?.daemon;
  const objectives = (daemon as { objectives?: unknown } | null | undefined)?.objectives as
    { rpoMinutes?: unknown; rtoMinutes?: unknown } | null | undefined;
  const rpoSeconds = minutesToSeconds(objectives?.rpoMinutes);
  const rtoSeconds = minutesToSeconds(objectives?.rtoMinutes);
  return {
    rpoSeconds,
    rtoSeconds,
    source: rpoSeconds === null && rtoSeconds === null ? null : OBJECTIVES_FIELD,
  };
}
