/**
 * Per BPF program run counts and run time, as the agent exports them
 * (`gotrail_probe_runs_total` and `gotrail_probe_run_seconds_total`, from the
 * kernel's program statistics), read from a running agent's /metrics.
 */

/** program name (e.g. gt_http_server_entry) → runs and CPU seconds spent in it so far */
export type ProgramStats = Map<string, { runs: number; seconds: number }>;

/** Reads the run statistics of every program, or of those whose name matches `only`, from `metricsUrl`. */
export async function programStats(metricsUrl: string, only?: RegExp): Promise<ProgramStats> {
  const text = await fetch(metricsUrl).then((r) => r.text());
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
