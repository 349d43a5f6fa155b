/**
 * What an entry probe costs at each site of a Go function's prologue: none,
 * the first instruction after the stack check (the `SUB RSP, N` of Go
 * before 1.21, which the kernel single-steps out of line: a second trap),
 * and the stack check's branch (`JBE morestack`, which the kernel emulates:
 * one trap), with the empty BPF program, in a program that calls the probed
 * function in a loop and times it itself. Built with each Go toolchain
 * given; rounds alternate the modes.
 *
 *   deploy/node bench/entry-site.ts [--go go1.19,go1.26] [--rounds 5] [--calls 20000]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { benchArgs } from './lib/args.ts';
import { DEFAULT_BPF_OBJECT } from '../daemon/agent/bpf-runtime.ts';
import { openGoBinary } from '../daemon/analysis/go-binary.ts';
import { BpfPrograms } from '../daemon/generated/layouts.ts';
import { BpfObject } from '../daemon/native/index.ts';

const repoRoot = join(import.meta.dirname, '..');
const GO: Record<string, { bin: string; env: Record<string, string> }> = {
  'go1.19': { bin: '/usr/lib/go-1.19/bin/go', env: { GOTOOLCHAIN: 'local' } },
  'go1.26': { bin: '/usr/local/go/bin/go', env: { GOTOOLCHAIN: 'local' } },
  'go1.27': { bin: '/usr/local/go/bin/go', env: { GOTOOLCHAIN: 'go1.27.3' } },
};

export interface EntrySiteRow {
  go: string;
  /** what follows the stack check, e.g. "SUB RSP" or "PUSH RBP" */
  siteAfterCheck: string;
  /** median ns per call over rounds */
  none: number;
  afterCheck: number;
  branch: number;
  /** the site gotrail picks */
  chosen: 'after check' | 'branch';
}

/** Runs the comparison for each toolchain; `log` gets progress lines. */
export async function entrySiteBench(toolchains: string[], rounds: number, calls: number, log: (s: string) => void): Promise<EntrySiteRow[]> {
  const rows: EntrySiteRow[] = [];
  const dir = join(repoRoot, 'build', 'bench');
  mkdirSync(dir, { recursive: true });
  for (const tc of toolchains) {
    const go = GO[tc];
    if (!go) throw new Error(`--go ${tc}: one of ${Object.keys(GO).join(', ')}`);
    const exe = join(dir, `entrysite-${tc}`);
    execFileSync(go.bin, ['build', '-o', exe, '.'], { cwd: join(repoRoot, 'bench', 'entrysite'), env: { ...process.env, ...go.env, CGO_ENABLED: '0' }, stdio: 'inherit' });
    const bin = openGoBinary(exe);
    let afterCheck: number, branch: number, chosen: EntrySiteRow['chosen'], code: Buffer;
    try {
      const fn = bin.findFunction('main.probed');
      if (!fn) throw new Error(`${exe}: main.probed not found`);
      afterCheck = bin.entrySite(fn);
      branch = bin.stackCheckSite(fn);
      chosen = bin.cheapEntrySite(fn).atStackCheck ? 'branch' : 'after check';
      code = execFileSync('dd', [`if=${exe}`, 'bs=1', `skip=${afterCheck}`, 'count=4', 'status=none']);
    } finally {
      bin.close();
    }
    const siteAfterCheck = code[0] === 0x48 && code[1] === 0x83 && code[2] === 0xec ? 'SUB RSP' : code[0] === 0x55 ? 'PUSH RBP' : `bytes ${code.toString('hex')}`;
    const obj = new BpfObject(DEFAULT_BPF_OBJECT, { autoload: [BpfPrograms.gt_calibration_empty] });
    obj.load();
    const child = spawn(exe, ['-n', String(calls)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const run = async (): Promise<number> => {
      child.stdin.write('go\n');
      const { value } = await lines.next();
      return (JSON.parse(String(value)) as { nsPerCall: number }).nsPerCall;
    };
    const modes = { none: undefined, afterCheck, branch } as const;
    const times: Record<keyof typeof modes, number[]> = { none: [], afterCheck: [], branch: [] };
    try {
      await run(); // warm-up
      for (let r = 0; r < rounds; r++) {
        const order = (Object.keys(modes) as Array<keyof typeof modes>).map((_, i, a) => a[(i + r) % a.length]!);
        for (const m of order) {
          const site = modes[m];
          const handle = site === undefined ? undefined : obj.attachUprobes(BpfPrograms.gt_calibration_empty, exe, [site], []);
          try {
            times[m].push(await run());
          } finally {
            if (handle !== undefined) await obj.detachAsync([handle]);
          }
        }
        log(`entry-site ${tc}: round ${r + 1}/${rounds}`);
      }
    } finally {
      child.stdin.end();
      child.kill();
      obj.close();
    }
    rows.push({ go: tc, siteAfterCheck, none: median(times.none), afterCheck: median(times.afterCheck), branch: median(times.branch), chosen });
  }
  return rows;
}

export function entrySiteMarkdown(rows: EntrySiteRow[], calls: number, rounds: number): string {
  const us = (ns: number): string => `${(ns / 1000).toFixed(2)} µs`;
  return [
    `entry probe (empty BPF program) on a Go function's prologue, ${calls} calls per round, ${rounds} rounds, medians; time per call measured by the program`,
    '',
    '| Go | after the stack check | no probe | probe after the check | probe on the check\'s branch | added: after / branch | site gotrail uses |',
    '|---|---|---:|---:|---:|---:|---|',
    ...rows.map((r) => `| ${r.go} | ${r.siteAfterCheck} | ${us(r.none)} | ${us(r.afterCheck)} | ${us(r.branch)} | ${us(r.afterCheck - r.none)} / ${us(r.branch - r.none)} | ${r.chosen} |`),
  ].join('\n');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

if (import.meta.main) {
  const { values } = benchArgs(import.meta.filename, { options: { go: { type: 'string', default: 'go1.19,go1.26' }, rounds: { type: 'string', default: '5' }, calls: { type: 'string', default: '20000' } } });
  const rows = await entrySiteBench(values.go.split(','), Number(values.rounds), Number(values.calls), (s) => process.stderr.write(`${s}\n`));
  process.stdout.write(entrySiteMarkdown(rows, Number(values.calls), Number(values.rounds)) + '\n');
}
