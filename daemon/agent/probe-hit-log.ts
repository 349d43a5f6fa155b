/**
 * Debug record of every probe hit and of the agent's own steps that change
 * what a hit sees (allow-list writes, link sets attached and released,
 * in-flight state forgotten), as JSON lines in one file, all stamped with
 * CLOCK_MONOTONIC nanoseconds (`t`), the clock of bpf_ktime_get_ns.
 *
 * Off by default (`gotrail run --debug-probe-hits FILE`): it writes one line
 * per uprobe hit, synchronously, which no production agent should do. Pair
 * entries with returns offline with `test/support/probe-hits.ts`.
 *
 * A line that cannot be written (a full disk, a file system gone
 * read-only, /dev/full) is counted in `unwrittenLines` and the agent goes on
 * tracing: the first failure is logged with the file and errno, the count
 * at close. Later lines are tried again (the space may come back).
 *
 * Line shapes:
 * - `{"t","hit":site,"outcome","tgid","goid","cookie","cpu","ip","sp","g"}`:
 *   one probe hit (site and outcome: enum gt_hit_site / gt_hit_outcome names
 *   without their prefix, e.g. "HTTP_SERVER_RETURN", "NOT_FOUND"; cookie:
 *   the binary id of the link set that fired).
 * - `{"t","op", ...fields}`: an agent step (`trace`, `untrace`, `forget`,
 *   `attached`, `detaching`, `released`).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { HitOutcome, HitSite, decodeProbeHitEvent } from '../generated/layouts.ts';
import type { Logger } from '../util/log.ts';

const name = (table: Record<string, number>, prefix: string, v: number): string =>
  Object.entries(table).find(([, n]) => n === v)?.[0].replace(prefix, '') ?? String(v);

export class ProbeHitLog {
  private fd: number | undefined;
  readonly path: string;
  private readonly log: Logger;
  /** Lines written since open. */
  writtenLines = 0;
  /** Lines a write failed for (each failure's line is lost, the agent goes on). */
  unwrittenLines = 0;

  /**
   * Opens (truncates) `path`.
   * @throws Error naming the file when it cannot be opened for writing.
   */
  constructor(path: string, log: Logger) {
    this.path = path;
    this.log = log;
    try {
      this.fd = openSync(path, 'w');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // no errno code on it: the start's EACCES/EPERM handling means BPF privileges, which this is not
      throw new Error(`cannot open the probe-hit log ${path} (--debug-probe-hits): ${err.code ?? err.message}`, { cause: e });
    }
  }

  /** An agent step, stamped now. */
  note(op: string, fields: Record<string, number | string | bigint | undefined> = {}): void {
    this.write({ t: process.hrtime.bigint(), op, ...fields });
  }

  /** One GT_EVENT_PROBE_HIT record at `off` in `buf`. */
  hit(buf: Buffer, off: number): void {
    const ev = decodeProbeHitEvent(buf, off);
    this.write({
      t: ev.time_ns,
      hit: name(HitSite, 'GT_HIT_', ev.site),
      outcome: name(HitOutcome, 'GT_HIT_', ev.outcome),
      tgid: ev.hdr.tgid, goid: ev.hdr.goid, cookie: ev.hdr.binary_id, cpu: ev.hdr.cpu,
      ip: '0x' + ev.ip.toString(16), sp: '0x' + ev.sp.toString(16), g: '0x' + ev.g.toString(16),
    });
  }

  private write(o: Record<string, unknown>): void {
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
      this.writtenLines++;
    } catch (e) {
      // called from attach steps and event batches: a throw here would stop
      // an attach or the agent's start for the sake of a debugging aid
      if (this.unwrittenLines++ === 0) {
        const err = e as NodeJS.ErrnoException;
        this.log.warn('cannot write the probe-hit log: its lines are lost and counted, tracing goes on', { file: this.path, errno: err.code ?? err.message });
      }
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // nothing left to lose: every line was written or counted
    }
    this.fd = undefined;
    if (this.unwrittenLines) this.log.warn('probe-hit log lines not written', { file: this.path, unwritten: this.unwrittenLines, written: this.writtenLines });
  }
}
