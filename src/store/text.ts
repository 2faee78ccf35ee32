import { EMOJI, LANGUAGES, TRICKY_BODIES, type Language } from './corpus.ts';
import type { Prng } from './random.ts';

const ALL_LANGUAGES: readonly Language[] = Object.values(LANGUAGES);

/** Share of bodies drawn from {@link TRICKY_BODIES}. */
const TRICKY_RATE = 0.015;
/** Share of bodies that are empty strings (not NULL: the column is NOT NULL). */
const EMPTY_RATE = 0.005;

/**
 * A message body, mostly in `language` (sometimes another one, as in real multilingual
 * tenants): 1 to ~80 words, often an emoji, sometimes several lines. A small share are
 * empty or taken from {@link TRICKY_BODIES}. Deterministic in `rng`.
 */
export function messageBody(rng: Prng, language: Language): string {
  const roll = rng.next();
  if (roll < EMPTY_RATE) return '';
  if (roll < EMPTY_RATE + TRICKY_RATE) return rng.pick(TRICKY_BODIES);
  const lang = rng.chance(0.12) ? rng.pick(ALL_LANGUAGES) : language;
  const lines = rng.chance(0.04) ? rng.range(2, 4) : 1;
  const out: string[] = [];
  for (let l = 0; l < lines; l++) out.push(sentence(rng, lang));
  return out.join('\n');
}

function sentence(rng: Prng, lang: Language): string {
  // Exponential length: mostly short chat lines, a long tail of paragraphs.
  const count = Math.min(80, 1 + Math.floor(-Math.log(1 - rng.next()) * 8));
  const words: string[] = [];
  for (let i = 0; i < count; i++) words.push(rng.pick(lang.words));
  let text = words.join(lang.spaced ? ' ' : '') + rng.pick(lang.stop);
  if (rng.chance(0.15)) text += ` ${rng.pick(EMOJI)}`;
  if (rng.chance(0.02)) text += ` https://example.com/d/${rng.nextU32().toString(36)}`;
  return text;
}

/** A shortened or reworded earlier version of `body`, for message_edits.previous_body. */
export function previousBody(rng: Prng, body: string, language: Language): string {
  if (body.length > 4 && rng.chance(0.6)) {
    const chars = Array.from(body);
    return chars
      .slice(0, Math.max(1, Math.floor(chars.length * (0.3 + rng.next() * 0.6))))
      .join('');
  }
  return messageBody(rng, language);
}
