/**
 * Detach time of gotrail's uprobe_multi links, quiet and beside a busy load
 * (2 busy-looping processes per core), modes alternating in one run. The
 * copies of the binary run as processes (started and listening before the
 * first attach), so every detach removes breakpoints from live processes'
 * pages, as in real use. Two instants per detach:
 *
 * - traps gone: no probed site's first byte reads 0xCC any more in any
 *   running copy (polled through /proc/PID/mem on a worker thread,
 *   bench/trap-watch.ts, after checking that every site read 0xCC once
 *   attached): from then on the traced programs stop paying for the traps;
 * - release: the detach promise settles: the kernel has let go of the
 *   links (after its grace periods), which is what the agent waits for
 *   before it reuses a binary id or clears the exec hook.
 *
 * Modes:
 * - `link per binary` (the agent's way): every probe gotrail plans for a
 *   net/http server binary attached to `copies` copies of it, each copy's
 *   sites as one link of the dispatcher program (gt_dispatch), each link
 *   closed by a thread of its own (`detachAsync` with `nice: DETACH_NICE`);
 * - `link per binary, normal priority`: the same with the closing threads
 *   at the agent's own priority (as without CAP_SYS_NICE);
 * - `link per program`: the same sites as one link per probe program and
 *   binary, closed like `link per binary` (how gotrail attached before the
 *   dispatcher, and still does with `linkPerBinary: false`);
 * - `sequential`: one copy's links per program closed one after another
 *   (one thread), which shows what one link costs on its own (the kernel
 *   waits for a grace period per link, see
 *   daemon/native/src/bpf_object_links.cc).
 *
 * The plan of the first copy serves the others (same content). Times are
 * wall times from the call.
 *
 *   deploy/node bench/detach-cost.ts [--copies 42] [--rounds 5] [--go go1.26] [--poll-gap-ms 0.2]
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { DETACH_NICE } from '../daemon/agent/attachments.ts';
import { planBinaryAt } from '../daemon/agent/binary-plan.ts';
import { DEFAULT_BPF_OBJECT, DISPATCH_PROGRAM } from '../daemon/agent/bpf-runtime.ts';
import { BpfObject } from '../daemon/native/index.ts';
import { probes } from '../daemon/probes/registry.ts';
import { repoRoot } from '../test/support/agent-process.ts';
import { startBusyLoad } from '../test/support/busy.ts';
import { startGoServer, type GoServer } from '../test/support/go-server.ts';
import { TrapWatch, type ProcessSites } from './trap-watch.ts';

export const DETACH_MODES = ['link per binary', 'link per binary, normal priority', 'link per program', 'sequential'] as const;
export type DetachMode = (typeof DETACH_MODES)[number];

export interface DetachRow {
  mode: DetachMode;
  load: 'quiet' | 'busy';
  linkSets: number;
  sites: number;
  /** running processes the sites were attached in */
  processes: number;
  /** release: call until the detach promise settled, ms per round, in round order */
  ms: number[];
  /** traps gone: call until no site read 0xCC in any process, ms per round, in round order */
  goneMs: number[];
  /** time between the last read that still found a breakpoint and traps gone (the measurement's uncertainty), ms per round */
  resolutionMs: number[];
}

/**
 * Virtual addresses of `fileOffsets` in process `pid`, from its executable
 * mappings of `path` (/proc/PID/maps). Throws when an offset is not mapped.
 */
export function siteAddresses(pid: number, path: string, fileOffsets: number[]): number[] {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').flatMap((line) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) r-xp ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    return m && m[4] === path ? [{ start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), off: parseInt(m[3]!, 16) }] : [];
  });
  return fileOffsets.map((o) => {
    const m = maps.find((x) => o >= x.off && o < x.off + (x.end - x.start));
    if (!m) throw new Error(`file offset 0x${o.toString(16)} of ${path} is not mapped executable in process ${pid}`);
    return m.start + (o - m.off);
  });
}

/**
 * Starts `copies` copies of `bin` as processes, attaches the plan of `bin`
 * to them and detaches it, `rounds` times per mode and load, modes rotating
 * within each round. `sequential` runs on one copy only (its links take one
 * grace period each). `pollGapMs`: pause between the trap watcher's passes
 * (a tight loop would take a core from the detach on a small machine).
 * `log` gets a line per step.
 */
export async function detachBench(bin: string, copies: number, rounds: number, log: (m: string) => void = () => {}, pollGapMs = 0.2): Promise<DetachRow[]> {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run bash deploy/setup.sh`);
  const { plan, error } = planBinaryAt(bin, probes);
  if (!plan) throw new Error(`plan ${bin}: ${error?.message}`);
  const sets = plan.probes.filter((p) => p.attachable).flatMap((p) => p.sites).filter((s) => s.offsets.length);
  const allOffsets = sets.flatMap((s) => s.offsets);
  const file = readFileSync(bin);
  const int3 = allOffsets.filter((o) => file[o] === 0xcc);
  if (int3.length) throw new Error(`${bin} has 0xCC at probed offsets ${int3.map((o) => `0x${o.toString(16)}`).join(', ')}: traps gone cannot be seen there`);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-detach-'));
  const paths = Array.from({ length: copies }, (_, i) => {
    const p = join(dir, `httpserver-${i}`);
    copyFileSync(bin, p);
    return p;
  });
  const obj = new BpfObject(DEFAULT_BPF_OBJECT);
  obj.load();
  const watch = new TrapWatch();
  const servers: GoServer[] = [];
  const rows = new Map<string, DetachRow>();
  try {
    log(`detach: starting ${copies} processes`);
    for (const p of paths) servers.push(await startGoServer(p));
    const addrs = servers.map((s, i) => ({ pid: s.pid, addrs: siteAddresses(s.pid, paths[i]!, allOffsets) }));
    const once = async (mode: DetachMode, load: DetachRow['load'] | 'warm-up'): Promise<void> => {
      const n = mode === 'sequential' ? 1 : copies;
      const handles: number[] = [];
      let sites = 0;
      for (const path of paths.slice(0, n)) {
        if (mode.startsWith('link per binary')) {
          // cookie 0: binary id 0, which no probe has facts for (the copies are idle anyway)
          handles.push(obj.attachUprobes(DISPATCH_PROGRAM, path, allOffsets, allOffsets.map(() => 0n)));
          sites += allOffsets.length;
          continue;
        }
        for (const s of sets) {
          handles.push(obj.attachUprobes(s.program, path, s.offsets, s.offsets.map(() => 0n)));
          sites += s.offsets.length;
        }
      }
      let armed: Awaited<ReturnType<TrapWatch['arm']>>;
      try {
        armed = await watch.arm(addrs.slice(0, n) satisfies ProcessSites[], pollGapMs);
      } catch (e) {
        await obj.detachAsync(handles);
        throw e;
      }
      const t0 = process.hrtime.bigint();
      const opts = mode === 'sequential' ? { threads: 1 } : mode === 'link per binary, normal priority' ? {} : { nice: DETACH_NICE };
      const { reniced } = await obj.detachAsync(handles, opts);
      if ('nice' in opts && !reniced) throw new Error(`detach ${mode}: the closing threads could not take nice ${DETACH_NICE} (run as root)`);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const gone = await armed.gone;
      const goneMs = Number(gone.at - t0) / 1e6;
      const resolutionMs = Number(gone.at - gone.lastTrapAt) / 1e6;
      if (load === 'warm-up') return;
      const key = `${mode}/${load}`;
      const row = rows.get(key) ?? { mode, load, linkSets: handles.length, sites, processes: n, ms: [], goneMs: [], resolutionMs: [] };
      row.ms.push(ms);
      row.goneMs.push(goneMs);
      row.resolutionMs.push(resolutionMs);
      rows.set(key, row);
    };
    // the first detach of a process is slower (thread stacks, code and
    // kernel caches met for the first time) and would land on one mode
    log('detach: warm-up');
    await once('link per program', 'warm-up');
    for (const load of ['quiet', 'busy'] as const) {
      const busy = load === 'busy' ? startBusyLoad() : undefined;
      try {
        for (let r = 0; r < rounds; r++) {
          const order = DETACH_MODES.map((_, i) => DETACH_MODES[(i + r) % DETACH_MODES.length]!);
          for (const mode of order) {
            log(`detach: ${load}, round ${r + 1}/${rounds}, ${mode}`);
            await once(mode, load);
          }
        }
      } finally {
        await busy?.stop();
      }
    }
  } finally {
    await watch.close();
    obj.close();
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
  return [...rows.values()];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Nearest-rank 90th percentile (the largest value when there are fewer than 10). */
const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.ceil(0.9 * xs.length) - 1]!;

/**
 * Markdown table of `rows`: median and p90 of traps gone and of release
 * per mode and load, release per link, and both against the target.
 */
export function detachMarkdown(rows: DetachRow[], rounds: number): string {
  const f = (n: number): string => n.toFixed(1);
  const verdict = (r: DetachRow, xs: number[]): string => {
    if (r.sites < 1000) return '—';
    const m = median(xs);
    return m < 100 ? (Math.max(...xs) < 100 ? 'met' : 'met (median)') : 'missed';
  };
  const lines = [
    `${rounds} rounds per mode and load, modes alternating within each round; busy: 2 busy-looping processes per core. ` +
      'Traps gone: from the call until no site reads 0xCC in any running copy; release: until the detach promise settles (the kernel has freed the links).',
    '',
    '| links closed | load | processes | link sets | sites | traps gone (median / p90) | release (median / p90) | release range | release per link | 1000 sites < 100 ms: traps gone / release |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.mode} | ${r.load} | ${r.processes} | ${r.linkSets} | ${r.sites} | ${f(median(r.goneMs))} / ${f(p90(r.goneMs))} ms | ${f(median(r.ms))} / ${f(p90(r.ms))} ms | ` +
        `${f(Math.min(...r.ms))}–${f(Math.max(...r.ms))} ms | ${f(median(r.ms) / r.linkSets)} ms | ${verdict(r, r.goneMs)} / ${verdict(r, r.ms)} |`,
    );
  }
  const res = rows.flatMap((r) => r.resolutionMs);
  lines.push('', `Traps gone is the first instant no breakpoint was read; the last read that still found one came ${f(median(res))} ms before it (median; max ${f(Math.max(...res))} ms).`);
  return lines.join('\n');
}

if (import.meta.main) {
  const { values } = benchArgs(import.meta.filename, {
    options: {
      copies: { type: 'string', default: '42' },
      rounds: { type: 'string', default: '5' },
      go: { type: 'string', default: 'go1.26' },
      'poll-gap-ms': { type: 'string', default: '0.2' },
    },
  });
  const rounds = Number(values.rounds);
  const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
  const rows = await detachBench(bin, Number(values.copies), rounds, (m) => process.stderr.write(`${m}\n`), Number(values['poll-gap-ms']));
  console.log(detachMarkdown(rows, rounds));
  console.log('\n' + JSON.stringify(rows));
}
