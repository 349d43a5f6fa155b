/**
 * Detach time of gotrail's uprobe_multi links, quiet and beside a busy load
 * (2 busy-looping processes per core), modes alternating in one run:
 *
 * - `parallel` (the agent's way, `detachAsync`): every probe gotrail plans
 *   for a net/http server binary attached to `copies` copies of it (one link
 *   per program and binary), each link closed by a thread of its own;
 * - `sequential`: one copy's links closed one after another (one thread),
 *   which shows what one link costs on its own (the kernel waits for a
 *   grace period per link, see daemon/native/src/bpf_object_links.cc);
 * - `one link per binary`: the same sites of every copy as a single link
 *   of one program per binary, closed like `parallel`. Not how gotrail
 *   attaches (one program per probe point): a kernel experiment that shows
 *   what fewer links would gain.
 *
 * The plan of the first copy serves the others (same content). Time is wall
 * time from the call to the settled promise.
 *
 *   deploy/node bench/detach-cost.ts [--copies 42] [--rounds 5] [--go go1.26]
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { planBinaryAt } from '../daemon/agent/binary-plan.ts';
import { DEFAULT_BPF_OBJECT } from '../daemon/agent/bpf-runtime.ts';
import { BpfObject } from '../daemon/native/index.ts';
import { probes } from '../daemon/probes/registry.ts';
import { repoRoot } from '../test/support/agent-process.ts';
import { startBusyLoad } from '../test/support/busy.ts';

export const DETACH_MODES = ['parallel', 'sequential', 'one link per binary'] as const;
export type DetachMode = (typeof DETACH_MODES)[number];

export interface DetachRow {
  mode: DetachMode;
  load: 'quiet' | 'busy';
  linkSets: number;
  sites: number;
  /** detach wall time per round, ms, in round order */
  ms: number[];
}

/**
 * Attaches the plan of `bin` to `copies` copies and detaches it, `rounds`
 * times per mode and load, modes rotating within each round. `sequential`
 * runs on one copy only (its links take one grace period each).
 * `log` gets a line per step.
 */
export async function detachBench(bin: string, copies: number, rounds: number, log: (m: string) => void = () => {}): Promise<DetachRow[]> {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run bash deploy/setup.sh`);
  const { plan, error } = planBinaryAt(bin, probes);
  if (!plan) throw new Error(`plan ${bin}: ${error?.message}`);
  const sets = plan.probes.filter((p) => p.attachable).flatMap((p) => p.sites).filter((s) => s.offsets.length);
  const allOffsets = sets.flatMap((s) => s.offsets);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-detach-'));
  const paths = Array.from({ length: copies }, (_, i) => {
    const p = join(dir, `httpserver-${i}`);
    copyFileSync(bin, p);
    return p;
  });
  const obj = new BpfObject(DEFAULT_BPF_OBJECT);
  obj.load();
  const rows = new Map<string, DetachRow>();
  const once = async (mode: DetachMode, load: DetachRow['load']): Promise<void> => {
    const targets = mode === 'sequential' ? paths.slice(0, 1) : paths;
    const handles: number[] = [];
    let sites = 0;
    for (const path of targets) {
      if (mode === 'one link per binary') {
        handles.push(obj.attachUprobes(sets[0]!.program, path, allOffsets, allOffsets.map(() => 0n)));
        sites += allOffsets.length;
        continue;
      }
      for (const s of sets) {
        handles.push(obj.attachUprobes(s.program, path, s.offsets, s.offsets.map(() => 0n)));
        sites += s.offsets.length;
      }
    }
    const t = performance.now();
    await obj.detachAsync(handles, mode === 'sequential' ? { threads: 1 } : {});
    const ms = performance.now() - t;
    const key = `${mode}/${load}`;
    const row = rows.get(key) ?? { mode, load, linkSets: handles.length, sites, ms: [] };
    row.ms.push(ms);
    rows.set(key, row);
  };
  try {
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
    obj.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return [...rows.values()];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Markdown table of `rows`: median and range per mode and load, ms per link for `sequential`. */
export function detachMarkdown(rows: DetachRow[], rounds: number): string {
  const f = (n: number): string => n.toFixed(1);
  const lines = [
    `${rounds} rounds per mode and load, modes alternating within each round; busy: 2 busy-looping processes per core`,
    '',
    '| links closed | load | link sets | sites | detach (median) | range over rounds | per link (median) | 1000 sites < 100 ms |',
    '|---|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    const m = median(r.ms);
    const verdict = r.sites < 1000 ? '—' : m < 100 ? (Math.max(...r.ms) < 100 ? 'met' : 'met (median)') : 'missed';
    lines.push(`| ${r.mode} | ${r.load} | ${r.linkSets} | ${r.sites} | ${f(m)} ms | ${f(Math.min(...r.ms))}–${f(Math.max(...r.ms))} ms | ${f(m / r.linkSets)} ms | ${verdict} |`);
  }
  return lines.join('\n');
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      copies: { type: 'string', default: '42' },
      rounds: { type: 'string', default: '5' },
      go: { type: 'string', default: 'go1.26' },
    },
  });
  const rounds = Number(values.rounds);
  const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
  const rows = await detachBench(bin, Number(values.copies), rounds, (m) => process.stderr.write(`${m}\n`));
  console.log(detachMarkdown(rows, rounds));
  console.log('\n' + JSON.stringify(rows));
}
