/** Exit codes scripts can rely on. */
export const EXIT = {
  OK: 0,
  /** the operation failed (analysis error, agent failure) */
  FAILED: 1,
  /** bad command line */
  USAGE: 2,
  /** the environment cannot run it: not root, no BTF, probes not built */
  ENVIRONMENT: 3,
  /** inspect: a Go binary on which no probe would attach */
  NOTHING_ATTACHES: 4,
} as const;

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}
