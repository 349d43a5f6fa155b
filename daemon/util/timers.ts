/**
 * The longest delay a Node.js timer waits: 2^31 - 1 ms (about 24.8 days).
 * Node does not refuse a longer one: `setTimeout`/`setInterval` warn
 * (TimeoutOverflowWarning) and fire after **1 ms** instead, so a setting
 * beyond it would do the opposite of what was asked (an agent given
 * `--duration 3000000` stopped at once; `--export-timeout 3000000000` failed
 * every export). Settings that become timers are refused above it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The problem text for a duration above {@link MAX_TIMER_MS}, in the words of the other range errors. */
export const TIMER_TOO_LONG = `expected at most ${MAX_TIMER_MS} (milliseconds, about 24.8 days: the longest a timer waits)`;

/** {@link MAX_TIMER_MS} in whole seconds (2147483, about 24.8 days), for settings counted in seconds. */
export const MAX_TIMER_SECONDS = Math.floor(MAX_TIMER_MS / 1000);

/**
 * Reads a duration setting that becomes a timer from its text (a flag's or a
 * variable's value): a whole number of milliseconds in decimal digits
 * (blanks around it allowed), from `min` to {@link MAX_TIMER_MS}. Every such
 * setting reads its text here, so that each refuses the same values (a
 * sign, a fraction, hex, an exponent, an empty text) with the same words.
 * @param min   the smallest value allowed, in milliseconds
 * @param unit  what the number counts, as the problem names it (e.g.
 *   `milliseconds (0: no limit)`)
 * @returns `{ ms }`, or `{ problem }`: what was expected and the text got
 *   (`expected an integer >= 50 (milliseconds), got "1e3"`), to which the
 *   caller prefixes the setting's name before refusing it or warning that it
 *   is ignored
 */
export function parseTimerMillis(raw: string, min: number, unit: string): { ms: number } | { problem: string } {
  const s = raw.trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (n > MAX_TIMER_MS) return { problem: `${TIMER_TOO_LONG}, got "${raw}"` };
  if (!(Number.isSafeInteger(n) && n >= min)) return { problem: `expected an integer >= ${min} (${unit}), got "${raw}"` };
  return { ms: n };
}
