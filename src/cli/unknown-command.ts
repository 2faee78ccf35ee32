/**
 * What to say when the words after `lethe` name no command: the word that was not
 * understood, the closest command when one is near, and the short usage line (the whole
 * command list is `lethe help`).
 */

/** The one-line usage printed under a usage error. */
export const SHORT_USAGE = 'usage: lethe <command> [options]   (`lethe help` lists the commands)';

/** Edit distance (insertions, deletions, substitutions, adjacent swaps) between two short words. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = best;
    }
  }
  return at(a.length, b.length);
}

/**
 * The known command closest to `word` (a whole command such as `verify`, or the group word of
 * `hold place`), or undefined when none is within a third of the word's length (at least 1,
 * at most 3 edits) or several are equally close.
 */
export function closestCommand(word: string, commandNames: Iterable<string>): string | undefined {
  const candidates = new Set<string>();
  for (const name of commandNames) {
    candidates.add(name);
    candidates.add(name.split(' ')[0] ?? name);
  }
  const limit = Math.min(3, Math.max(1, Math.floor(word.length / 3)));
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  let tie = false;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
      tie = false;
    } else if (distance === bestDistance) {
      tie = true;
    }
  }
  return best !== undefined && bestDistance <= limit && !tie ? best : undefined;
}

/**
 * The message for `argv` that names no command (argv is not empty). A group word alone or
 * with an unknown second word (`lethe hold`, `lethe hold plaec`) lists the group's
 * subcommands; anything else names the word and a close command if there is one.
 */
export function unknownCommandMessage(argv: readonly string[], commandNames: readonly string[]): string {
  const [first = '', second] = argv;
  const subcommands = commandNames.filter((n) => n.startsWith(`${first} `)).map((n) => n.slice(first.length + 1));
  if (subcommands.length > 0) {
    const asked = second === undefined || second.startsWith('-') ? undefined : second;
    const near = asked === undefined ? undefined : closestCommand(asked, subcommands);
    const head = asked === undefined ? `\`lethe ${first}\` needs a subcommand` : `unknown command "${first} ${asked}"`;
    return (
      `${head}: ${first} takes ${subcommands.join(', ')}` +
      (near === undefined ? '' : ` (did you mean \`lethe ${first} ${near}\`?)`) +
      `\nusage: lethe ${first} <${subcommands.join('|')}> [options]`
    );
  }
  const near = first.startsWith('-') ? undefined : closestCommand(first, commandNames);
  const what = first.startsWith('-') ? `an option before the command ("${first}"): put options after it` : `unknown command "${first}"`;
  return `${what}${near === undefined ? '' : ` (did you mean \`lethe ${near}\`?)`}\n${SHORT_USAGE}`;
}
