/**
 * Per BPF program run counts and run time, as the agent exports them
 * (`gotrail_probe_runs_total` and `gotrail_probe_run_seconds_total`, from the
 * kernel's program statistics), read from a running agent's /metrics.
 */

/** program name (e.g. gt_http_server_entry) → runs and CPU seconds spent in it so far */
export type ProgramStats = Map<string, { runs: number; seconds: number }>;

/** The run statistics of every program, or of those whose name matches `only`, in the Prometheus text `text`. */
export function parseProgramStats(text: string, only?: RegExp): ProgramStats {
  const out: ProgramStats = new Map();
  for (const m of text.matchAll(/^gotrail_probe_(runs|run_seconds)_total\{program="([^"]+)"\} (\S+)$/gm)) {
    const program = m[2]!;
    if (only && !only.test(program)) continue;
    const s = out.get(program) ?? { runs: 0, seconds: 0 };
    if (m[1] === 'runs') s.runs = Number(m[3]);
    else s.seconds = Number(m[3]);
    out.set(program, s);
  }
  return out;
}

/** Reads the run statistics of every program, or of those whose name matches `only`, from `metricsUrl`. */
export async function programStats(metricsUrl: string, only?: RegExp): Promise<ProgramStats> {
  return parseProgramStats(await fetch(metricsUrl).then((r) => r.text()), only);
}

/**
 * Programs that run on a traced request's behalf: every program but the
 * start-up calibration's (it probes the agent's own helper) and the
 * node-wide tracepoints (every process's exec and exit, the agent's own
 * sockets), which fire for whatever else runs on the node. That is every
 * uprobe program, whatever package it instruments (net/http, gRPC,
 * database/sql, goroutines, …), and the socket programs of header injection.
 */
export const PER_REQUEST_PROGRAMS = /^gt_(?!(calibration|process|self)_)/;

/**
 * CPU seconds each program of {@link PER_REQUEST_PROGRAMS} spent between two
 * scrapes of /metrics (`before`, `after`), by program, those that ran only,
 * most first.
 */
export function perRequestBpfSeconds(before: string, after: string): Map<string, number> {
  const b = parseProgramStats(before, PER_REQUEST_PROGRAMS);
  const out: Array<[string, number]> = [];
  for (const [p, s] of parseProgramStats(after, PER_REQUEST_PROGRAMS)) {
    const d = s.seconds - (b.get(p)?.seconds ?? 0);
    if (d > 0) out.push([p, d]);
  }
  return new Map(out.sort((x, y) => y[1] - x[1]));
}
