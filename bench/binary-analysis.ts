/**
 * How long the agent takes to plan a Go binary it has never seen (ELF and Go
 * tables, function sites, DWARF offsets for every probe): the work done on
 * the exec path of a new binary. Two figures per binary, in milliseconds:
 *
 * - first: the first plan in a fresh Node.js process (code not yet compiled
 *   by the JIT), the median over `--runs` processes;
 * - warm: a plan in a process that has already planned it a few times, the
 *   median over `--runs` plans.
 *
 * The files are read once beforehand, so both figures are with a warm page cache.
 *
 *   deploy/node bench/binary-analysis.ts [--runs 10] binary...
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.ts';
import { planBinaryAt } from '../daemon/agent/binary-plan.ts';
import { probes } from '../daemon/probes/registry.ts';

const { values, positionals } = benchArgs(import.meta.filename, {
  allowPositionals: true,
  options: {
    runs: { type: 'string', default: '10' },
    once: { type: 'boolean', default: false },
  },
});

function planMs(path: string): number {
  const started = performance.now();
  const r = planBinaryAt(path, probes);
  const ms = performance.now() - started;
  if (!r.plan) throw new Error(`${path}: ${r.error?.message}`);
  return ms;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

if (values.once) {
  // child: one plan of one binary in this fresh process
  process.stdout.write(`${planMs(positionals[0]!)}\n`);
} else {
  const runs = Number(values.runs);
  const self = fileURLToPath(import.meta.url);
  console.log(`binary\tfirst ms (fresh process, median of ${runs})\twarm ms (median of ${runs})`);
  for (const path of positionals) {
    readFileSync(path);
    const first: number[] = [];
    for (let i = 0; i < runs; i++) {
      first.push(Number(execFileSync(process.execPath, [...process.execArgv, self, '--once', path], { encoding: 'utf8' }).trim()));
    }
    for (let i = 0; i < 3; i++) planMs(path);
    const warm: number[] = [];
    for (let i = 0; i < runs; i++) warm.push(planMs(path));
    console.log(`${path}\t${median(first).toFixed(1)}\t${median(warm).toFixed(1)}`);
  }
}
