/**
 * Reads a probe-hit log (`gotrail run --debug-probe-hits FILE`) and explains
 * every return that found no entry, by replaying the hits of its goroutine
 * and the agent's steps in time order.
 *
 * Usage as a tool: `deploy/node test/support/probe-hits.ts FILE` prints the
 * counts by cause and the first misses of each cause with their history.
 */
import { readFileSync } from 'node:fs';

export interface HitLine {
  t: bigint;
  hit?: string;
  outcome?: string;
  tgid?: number;
  goid?: string;
  cookie?: number;
  cpu?: number;
  ip?: string;
  op?: string;
  id?: number;
  key?: string;
  removed?: number;
}

/** Why a return found no entry. */
export type MissCause =
  /** the same RET fired in two (or more) link sets of one binary: the first consumed the entry */
  | 'double-link-set'
  /** the entry hit while the process was not on the allow-list */
  | 'entry-untraced'
  /** the entry was stored, then the agent forgot the process's state */
  | 'forgotten'
  /** the entry was stored and nothing the log shows removed it (map eviction) */
  | 'vanished'
  /** no hit of this goroutine since its process was allowed: the call began before */
  | 'preattach'
  | 'unexplained';

export interface Miss {
  line: HitLine;
  cause: MissCause;
  history: HitLine[];
}

export function readHits(path: string): HitLine[] {
  const out: HitLine[] = [];
  for (const l of readFileSync(path, 'utf8').split('\n')) {
    if (!l) continue;
    const o = JSON.parse(l) as Record<string, unknown>;
    out.push({ ...(o as object), t: BigInt(o['t'] as string) });
  }
  return out.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
}

const family = (site: string): string => site.replace(/_(ENTRY|RETURN|PANIC|CONN)$/, '');
const isEntry = (site: string): boolean => site.endsWith('_ENTRY');
const isReturn = (site: string): boolean => site.endsWith('_RETURN');

/** Every return (server and client) that found no entry, with its cause. */
export function explainMisses(lines: HitLine[]): Miss[] {
  const byKey = new Map<string, HitLine[]>();
  const tracedSince = new Map<number, bigint>();
  const forgets = new Map<number, bigint[]>();
  const misses: Miss[] = [];
  for (const l of lines) {
    if (l.op === 'trace' && l.tgid !== undefined) tracedSince.set(l.tgid, l.t);
    if (l.op === 'forget' && l.tgid !== undefined) forgets.set(l.tgid, [...(forgets.get(l.tgid) ?? []), l.t]);
    if (!l.hit || l.tgid === undefined) continue;
    const k = `${family(l.hit)}:${l.tgid}:${l.goid}`;
    const h = byKey.get(k) ?? [];
    byKey.set(k, h);
    if (isReturn(l.hit) && l.outcome === 'NOT_FOUND') {
      // what happened to this goroutine since its last completed return
      let from = h.length;
      while (from > 0 && !(isReturn(h[from - 1]!.hit!) && h[from - 1]!.outcome === 'FOUND' && h[from - 1]!.t < l.t - 1_000_000n)) from--;
      const since = h.slice(from);
      // the goroutine's last entry or completed return: a return completed by
      // another link set just before, with no entry since, fired for this same RET
      const last = [...h].reverse().find((x) => isEntry(x.hit!) || (isReturn(x.hit!) && x.outcome === 'FOUND'));
      const stored = [...since].reverse().find((x) => isEntry(x.hit!) && x.outcome === 'STORED');
      let cause: MissCause;
      if (last && isReturn(last.hit!) && last.outcome === 'FOUND' && last.cookie !== l.cookie && l.t - last.t < 50_000_000n) cause = 'double-link-set';
      else if (since.some((x) => isEntry(x.hit!) && x.outcome === 'UNTRACED')) cause = 'entry-untraced';
      else if (stored && (forgets.get(l.tgid) ?? []).some((t) => t > stored.t && t < l.t)) cause = 'forgotten';
      else if (stored) cause = 'vanished';
      else if (!h.some((x) => x.outcome !== 'UNTRACED' && (tracedSince.get(l.tgid!) ?? 0n) <= x.t)) cause = 'preattach';
      else cause = 'unexplained';
      misses.push({ line: l, cause, history: h.slice(-6) });
    }
    h.push(l);
  }
  return misses;
}

export function countByCause(misses: Miss[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of misses) out[m.cause] = (out[m.cause] ?? 0) + 1;
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const lines = readHits(process.argv[2]!);
  const misses = explainMisses(lines);
  const hits = lines.filter((l) => l.hit);
  console.log(`hits ${hits.length}, returns without entry ${misses.length}:`, countByCause(misses));
  const shown = new Map<string, number>();
  for (const m of misses) {
    const n = shown.get(m.cause) ?? 0;
    if (n >= 3) continue;
    shown.set(m.cause, n + 1);
    console.log(`\n${m.cause}: ${JSON.stringify(m.line, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
    for (const x of m.history) console.log('   ', JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
  }
  const notes = lines.filter((l) => l.op);
  console.log(`\nagent steps: ${notes.length}`);
}
