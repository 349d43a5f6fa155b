// Preloaded by the launcher (node --import) before the CLI's modules load.
//
// Node resets every signal to its default action when it starts, and the
// default action of SIGHUP ends the process: a reload asked while `gotrail
// run` loads its modules and its configuration (systemd's ExecReload, a
// ConfigMap update tool, a terminal closing) would kill the agent, exit 129.
// This handler counts such SIGHUPs instead, from the first moment JavaScript
// runs, and daemon/cli/early-signals.ts hands the count to the agent, which
// reloads once it has started. Plain JavaScript, not TypeScript: loading
// Node's type stripper first would widen the window it closes.
if (process.argv[2] === 'run') {
  const early = { hups: 0, handler: () => void early.hups++ };
  process.on('SIGHUP', early.handler);
  globalThis[Symbol.for('gotrail.earlySignals')] = early;
}
