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

const name = (table: Record<string, number>, prefix: string, v: number): string =>
  Object.entries(table).find(([, n]) => n === v)?.[0].replace(prefix, '') ?? String(v);

export class ProbeHitLog {
  private fd: number | undefined;

  /** Opens (truncates) `path`. Throws when it cannot be written. */
  constructor(path: string) {
    this.fd = openSync(path, 'w');
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
    writeSync(this.fd, JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
