/**
 * The words bench/run.ts prints around its latency tables, apart from the
 * run itself so that they can be checked without running a benchmark.
 */

/** What a run ran on (bench/run.ts collects it; stored with every result). */
export interface BenchEnvironment {
  /** ISO 8601 time of the run's start */
  date: string;
  kernel: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  virtualisation: string;
  node: string;
  go: string;
  libbpf: string;
  /** `git describe --always --dirty` of the checkout */
  gotrail: string;
  /** 1, 5 and 15 minute load averages */
  loadAverageAtStart: number[];
  loadAverageAtEnd: number[];
}

/** How many rounds back each median: a single round has no spread, so its figures are not fit for comparing. */
export function roundsLine(rounds: number): string {
  return rounds === 1
    ? '1 round per mode, alternating in one run: one round has no spread to judge (use --rounds 3 or more before comparing)'
    : `${rounds} rounds per mode, alternating in one run (medians over rounds)`;
}

/** The requests the agent saw, which include each round's unrecorded warm-up (so more than the timed ones). */
export function tracedLine(traced: number, calls: number, warmup: number, rounds: number): string {
  return `requests traced ${traced} (${rounds} round${rounds === 1 ? '' : 's'} × (${warmup} warm-up + ${calls} timed))`;
}

/** One line naming the machine, the versions and the load average at start and end (printed with the tables, and under them in bench/README.md). */
export function environmentLine(e: BenchEnvironment): string {
  return `${e.date} · Linux ${e.kernel} · ${e.cpu} × ${e.cores} · ${e.memoryGiB} GiB · virtualisation: ${e.virtualisation} · Node ${e.node} · ${e.go} · libbpf ${e.libbpf} · gotrail ${e.gotrail} · load average ${e.loadAverageAtStart.join(' ')} at start, ${e.loadAverageAtEnd.join(' ')} at end`;
}
