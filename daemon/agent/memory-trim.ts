/**
 * Gives memory freed after bursts of work back to the kernel. Start-up and
 * each attach (binary analysis, BPF object and link set-up, module loading)
 * allocate tens of MiB through glibc's malloc (V8's compiler zones, libbpf,
 * libelf) and free it again; glibc keeps those pages resident inside its
 * arenas, so without a trim the agent's RSS stays at its start-up peak.
 */
import { mallocTrim, type MallocStats } from '../native/index.ts';

/** Quiet time after the last burst before trimming, in ms. */
export const TRIM_QUIET_MS = 1000;

export class MemoryTrim {
  private timer: NodeJS.Timeout | undefined;
  /** Trims done so far, and what the last one left (for tests and logs). */
  trims = 0;
  last: MallocStats | undefined;

  private readonly trim: () => MallocStats;
  private readonly quietMs: number;

  /** @param trim the trim itself (default: malloc_trim through the addon). */
  constructor(trim: () => MallocStats = mallocTrim, quietMs = TRIM_QUIET_MS) {
    this.trim = trim;
    this.quietMs = quietMs;
  }

  /** A burst of work happened: trim once it has been quiet for `quietMs`. Never throws. */
  burst(): void {
    if (this.timer) this.timer.refresh();
    else {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        try {
          this.last = this.trim();
          this.trims++;
        } catch {
          // a trim is an optimisation: without it memory stays resident, nothing else changes
        }
      }, this.quietMs);
      this.timer.unref();
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
