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
