/**
 * SIGHUPs that arrive while `gotrail run` starts: counted, not fatal, and
 * handed to the agent once its reloader listens (it then reloads and logs
 * that the signal came during start). The launcher's preload
 * (daemon/bin/early-signals.js) installs the counting handler before any
 * module loads; started another way (`node daemon/cli/main.ts run`, under a
 * profiler), {@link holdEarlySignals} installs it here, later.
 */

/** What the preload leaves on globalThis under `Symbol.for('gotrail.earlySignals')`. */
interface EarlySignals {
  /** SIGHUPs received since the handler was installed */
  hups: number;
  /** the listener on process 'SIGHUP' */
  handler: () => void;
}

const KEY = Symbol.for('gotrail.earlySignals');
const slot = globalThis as { [KEY]?: EarlySignals };

/** Counts SIGHUPs from now on, unless the launcher's preload already does. Idempotent. */
export function holdEarlySignals(): void {
  if (slot[KEY]) return;
  const early: EarlySignals = { hups: 0, handler: () => void early.hups++ };
  process.on('SIGHUP', early.handler);
  slot[KEY] = early;
}

/**
 * Hands SIGHUP over from the early handler to the agent's own: lets the
 * event loop dispatch every SIGHUP already received (a signal is only
 * queued by Node's C handler; its listeners run when the loop next polls,
 * which a start-up that awaits only settled promises may not have done for
 * seconds), then calls `install` (which adds the agent's listener), then
 * removes the early handler, with no loop turn between the two: a SIGHUP
 * is neither lost, nor taken twice, nor fatal (Node restores the default
 * action when a signal's last listener goes).
 * @returns how many SIGHUPs came while holding (0 when nothing held them).
 */
export async function releaseEarlySignals(install: () => void): Promise<number> {
  // two turns: the first may begin past its poll phase (in an I/O callback)
  for (let i = 0; i < 2; i++) await new Promise<void>((r) => setImmediate(r));
  install();
  const early = slot[KEY];
  if (!early) return 0;
  process.off('SIGHUP', early.handler);
  delete slot[KEY];
  return early.hups;
}
