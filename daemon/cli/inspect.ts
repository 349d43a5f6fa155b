/**
 * `gotrail inspect <binary|pid>`: everything gotrail knows about one binary
 * and, for every probe, whether it would attach and exactly why not.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { planBinaryAt, planDisagreements, type BinaryPlan } from '../agent/binary-plan.ts';
import { probes } from '../probes/registry.ts';
import { untracedLibraries } from '../probes/untraced.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { CAP_SYS_PTRACE, hasCapability } from '../util/capabilities.ts';

interface KernelView {
  uprobeMulti: boolean;
  lockdown: string;
  headerInjection: boolean;
  /** The bpf_probe_write_user injection on this kernel: `allowed`, or `refused (<reason>)`. */
  writeUser: string;
}

/** What the running kernel allows, when we may ask it (root); undefined otherwise. */
async function kernelView(): Promise<KernelView | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const { kernelFeatures } = await import('../native/index.ts');
    const { writeUserVerdict } = await import('../agent/write-user.ts');
    const f = kernelFeatures();
    const v = writeUserVerdict(f);
    return { uprobeMulti: f.uprobeMulti, lockdown: f.lockdown, headerInjection: f.probeWriteUser, writeUser: v.allowed ? 'allowed' : `refused (${v.reason})` };
  } catch {
    return undefined;
  }
}

function kernelLines(k: KernelView | undefined): string[] {
  if (!k) return ['kernel:     not checked (run as root to see what this kernel allows)'];
  return [
    `kernel:     ${k.uprobeMulti ? 'uprobe_multi links (one link per binary, through a dispatcher program)' : 'single uprobes (one per site; slow to detach)'}`,
    `            header injection with bpf_probe_write_user: ${k.writeUser}${k.headerInjection ? '' : '; node-local links need no injection'}`,
  ];
}

export const inspectHelp = `Usage: gotrail inspect <binary|pid> [--json] [--offsets-from dwarf|types|db] [--agent URL]

Analyses a Go executable (or the executable of a running process) and shows
its Go version, modules, whether it is stripped or has DWARF, and for every
probe whether it would attach: the functions and sites it would probe (each
emulated or single-stepped: whether the kernel emulates the probed
instruction, one trap per hit, or single-steps it, a second trap), the
offsets it would use and where they come from — (dwarf) the binary's debug
information, (types) the Go type metadata every Go binary carries, (db) the
offsets database — or exactly why it would not. Sources that disagree on an
offset are listed (the first in that order is used). For a pid, the agent
running on this node (its /status, when it answers within a second) says
whether it traces the process, or why not.

Options:
  --json                  machine-readable output: one JSON object on stdout,
                          also for errors: {"error": "<message>", "exitCode": N}
  --offsets-from SOURCE   resolve offsets from this source only: dwarf, types or db
  --agent URL             the running agent's metrics address, asked about a pid
                          (default http://127.0.0.1:9464, the agent's default)
  -h, --help              this help

Exit codes: 0 at least one probe would attach; 1 not a readable Go binary;
2 usage; 4 a Go binary on which no probe would attach.
`;

/** What a running agent says of one process: `traced`, or `not traced` with its reason; `refused` when it answers /status to loopback peers only and this is not one. */
export interface AgentView {
  url: string;
  state: 'traced' | 'not traced' | 'refused';
  reason?: string;
}

interface AgentStatus {
  processesTraced?: Array<{ pid: number }>;
  processesNotTraced?: Array<{ pid: number; reason: string }>;
  processesNotSelected?: Array<{ pid: number; reason: string }>;
}

/** Process `pid` as the agent serving `url` sees it (its /status); undefined when no agent answers there within a second. */
export async function agentView(url: string, pid: number): Promise<AgentView | undefined> {
  let s: AgentStatus;
  try {
    const res = await fetch(`${url.replace(/\/+$/, '')}/status`, { signal: AbortSignal.timeout(1000) });
    // an agent that answers, but not to this address (--admin-access loopback, its default)
    if (res.status === 403) return { url, state: 'refused', reason: 'it answers /status to loopback peers only: run inspect on its host (or in its pod), or start it with --admin-access any' };
    if (!res.ok) return undefined;
    s = (await res.json()) as AgentStatus;
  } catch {
    return undefined;
  }
  if (s.processesTraced?.some((p) => p.pid === pid)) return { url, state: 'traced' };
  const left = s.processesNotTraced?.find((p) => p.pid === pid) ?? s.processesNotSelected?.find((p) => p.pid === pid);
  return { url, state: 'not traced', reason: left?.reason ?? 'not a process it traces or has left out: not a Go program it can trace (see below), or not looked at yet' };
}

function agentLines(a: AgentView | undefined, url: string): string[] {
  if (!a) return [`agent:      not asked (no agent answered at ${url})`];
  if (a.state === 'refused') return [`agent:      not asked: ${a.reason} (${a.url})`];
  return [a.state === 'traced' ? `agent:      traced (${a.url})` : `agent:      not traced: ${a.reason} (${a.url})`];
}

export function planToJson(plan: BinaryPlan, kernel?: KernelView): unknown {
  return {
    kernel: kernel ?? null,
    path: plan.path,
    goVersion: plan.goVersion,
    stripped: plan.stripped,
    dwarf: plan.hasDwarf,
    pie: plan.pie,
    functionSource: plan.functionSource,
    goidOffset: plan.goidOffset ?? null,
    goidSource: plan.goidSource ?? null,
    typeMetadata: { layout: plan.typesLayout ?? null, error: plan.typesError ?? null, ms: plan.typesMs ?? null },
    disagreements: planDisagreements(plan),
    reason: plan.reason ?? null,
    modules: plan.modules,
    untracedLibraries: untracedLibraries(plan.modules, probes),
    probes: plan.probes.map((p) => ({
      id: p.probe.id,
      description: p.probe.description,
      attachable: p.attachable,
      reason: p.reason ?? null,
      degraded: p.degraded,
      unverified: p.unverified,
      sites: p.sites.map((s) => ({ symbol: s.symbol, role: s.role, program: s.program, fileOffsets: s.offsets.map((o) => '0x' + o.toString(16)), trapKinds: s.trapKinds ?? null })),
      offsets: Object.fromEntries(Object.entries(p.offsets).map(([k, v]) => [k, { offset: v, source: p.offsetSources[k] ?? 'unknown' }])),
    })),
  };
}

/**
 * The executable of process `pid` as its /proc/PID/exe link names it: the
 * real path, and whether the file was deleted or replaced after the process
 * started (the link then ends in " (deleted)").
 */
export function processExecutable(pid: number): { path: string; deleted: boolean } {
  try {
    const link = readlinkSync(`/proc/${pid}/exe`);
    const deleted = link.endsWith(' (deleted)');
    return { path: deleted ? link.slice(0, -' (deleted)'.length) : link, deleted };
  } catch {
    return { path: `/proc/${pid}/exe`, deleted: false };
  }
}

/**
 * Why process `pid`'s executable cannot be read, or undefined when it can:
 * no such process, a process without one (a kernel thread, a zombie), or
 * no permission (reading another user's /proc/PID/exe takes CAP_SYS_PTRACE).
 */
export function unreadableExecutable(pid: number): string | undefined {
  if (!existsSync(`/proc/${pid}`)) return `no process ${pid}`;
  try {
    readlinkSync(`/proc/${pid}/exe`);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    let name = '';
    try {
      name = ` (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`;
    } catch {
      /* gone meanwhile */
    }
    if (code === 'ENOENT') return existsSync(`/proc/${pid}`) ? `process ${pid}${name} has no executable: a kernel thread, or a process that has exited (a zombie)` : `no process ${pid}`;
    if (code === 'EACCES' || code === 'EPERM') {
      const ptrace = hasCapability(CAP_SYS_PTRACE);
      const needs = "reading the executable of another user's process, or of a more privileged one, takes CAP_SYS_PTRACE";
      const why = ptrace === true
        ? 'even with CAP_SYS_PTRACE: the process is protected from this one (it runs in another user namespace, holds capabilities this process lacks in its own namespace, or a security module refuses)'
        : process.getuid?.() === 0
          ? `${needs}, which this process lacks although it runs as root (dropped from its capabilities): run it with CAP_SYS_PTRACE`
          : `${needs} (root has it): run it as root (sudo gotrail inspect ${pid})`;
      const file = commandLineFile(pid);
      return `cannot read the executable of process ${pid}${name}: permission denied: ${why}${file ? `, or inspect the file its command line names: gotrail inspect ${file}` : ''}`;
    }
    return `cannot read the executable of process ${pid}${name}: ${(e as Error).message}`;
  }
}

/**
 * The absolute path process `pid` was started with (its argv[0], from
 * /proc/PID/cmdline, which needs no privilege), when that names a file here;
 * the file may differ from what the process runs (replaced since).
 */
function commandLineFile(pid: number): string | undefined {
  try {
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return argv0.startsWith('/') && existsSync(argv0) ? argv0 : undefined;
  } catch {
    return undefined;
  }
}

export function renderPlan(plan: BinaryPlan, kernel?: KernelView, proc?: { pid: number; deleted: boolean }): string {
  const lines: string[] = [];
  if (!proc) {
    lines.push(`binary:     ${plan.path}`);
  } else if (!proc.deleted) {
    lines.push(`binary:     ${plan.path} (run by process ${proc.pid})`);
  } else {
    lines.push(`binary:     ${plan.path} (deleted) (run by process ${proc.pid})`);
    lines.push(`            the file was replaced or removed after the process started: it still runs the old`);
    lines.push(`            code, read here through /proc/${proc.pid}/exe; the agent traces it there too (probes on the`);
    lines.push(`            old file, for its processes only), while processes started from ${plan.path} now`);
    lines.push(`            run the new file, which is analysed and attached on its own`);
  }
  lines.push(`go:         ${plan.goVersion}`);
  lines.push(`stripped:   ${plan.stripped ? 'yes (functions from pclntab)' : 'no'}`);
  lines.push(`dwarf:      ${plan.hasDwarf ? 'yes (offsets read from it)' : 'no'}`);
  lines.push(`types:      ${plan.typesError !== undefined ? `unusable: ${plan.typesError}` : plan.typesLayout !== undefined ? `Go type metadata read (${plan.typesLayout} layout, ${plan.typesMs?.toFixed(0)} ms)` : 'not read'}`);
  lines.push(`pie:        ${plan.pie ? 'yes' : 'no'}`);
  lines.push(`goid:       ${plan.goidOffset !== undefined ? `runtime.g.goid at +${plan.goidOffset} (${plan.goidSource ?? '?'})` : 'unknown'}`);
  for (const d of planDisagreements(plan)) {
    lines.push(`DISAGREEMENT ${d.field}: ${Object.entries(d.offsets).map(([k, v]) => `${k} says ${v}`).join(', ')}; using ${d.chosen}`);
  }
  if (plan.modules.length) {
    lines.push('modules:');
    for (const m of plan.modules) lines.push(`  ${m.path} ${m.version}`);
  }
  lines.push(...kernelLines(kernel));
  lines.push('probes:');
  for (const p of plan.probes) {
    lines.push(`  ${p.attachable ? '✔' : '✘'} ${p.probe.id} — ${p.probe.description}`);
    if (!p.attachable) {
      lines.push(`      not attachable: ${p.reason}`);
      continue;
    }
    for (const s of p.sites) {
      // the trap kind once where every site has the same, else after each
      const kinds = s.trapKinds?.map((k) => k.replace('_', '-'));
      const same = kinds?.every((k) => k === kinds[0]);
      const at = s.offsets.map((o, i) => '0x' + o.toString(16) + (kinds && !same ? ` (${kinds[i]})` : '')).join(', ');
      lines.push(`      ${s.role.padEnd(7)} ${s.symbol} → ${s.program} at ${at}${kinds?.length && same ? ` (${kinds[0]})` : ''}`);
    }
    for (const [f, o] of Object.entries(p.offsets)) lines.push(`      offset ${f} = ${o} (${p.offsetSources[f] ?? '?'})`);
    for (const d of p.degraded) lines.push(`      degraded: ${d}`);
    for (const u of p.unverified) lines.push(`      unverified: ${u}`);
  }
  const untraced = untracedLibraries(plan.modules, probes);
  if (untraced.length) {
    lines.push('not traced (gotrail has no probe for these libraries yet):');
    for (const u of untraced) lines.push(`  ✘ ${u.module} ${u.version} — its ${u.calls} make no spans`);
  }
  return lines.join('\n') + '\n';
}

/**
 * `gotrail inspect`. With `--json`, every outcome is one JSON object on
 * stdout: the plan, or on an error `{"error": message, "exitCode": n}`
 * (exit codes as without --json), so that a script parses every run.
 */
export async function runInspect(argv: string[], out: (s: string) => void): Promise<number> {
  const dashDash = argv.indexOf('--');
  const json = (dashDash < 0 ? argv : argv.slice(0, dashDash)).includes('--json');
  try {
    return await inspect(argv, out);
  } catch (e) {
    if (!json) throw e;
    let exitCode: number = EXIT.FAILED;
    let message = e instanceof Error ? e.message : String(e);
    if (e instanceof CliError) exitCode = e.exitCode;
    else if ((e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) exitCode = EXIT.USAGE;
    // the help that follows a usage error on a terminal is no part of the error
    message = message.split('\n\nUsage: ')[0]!;
    out(JSON.stringify({ error: message, exitCode }, null, 2) + '\n');
    return exitCode;
  }
}

async function inspect(argv: string[], out: (s: string) => void): Promise<number> {
  // A pid is a whole number from 1: "-1" would otherwise reach the option
  // parser as an unknown short option, whose message names none of that
  const dashDash = argv.indexOf('--');
  const before = dashDash < 0 ? argv : argv.slice(0, dashDash);
  for (const [i, a] of before.entries()) {
    if (before[i - 1] === '--offsets-from') continue; // its value, checked below
    if (/^-\d+$/.test(a) || /^0+$/.test(a)) {
      throw new CliError(`"${a}" is not a process id: a pid is a whole number from 1 (see ps or pgrep); for a file of that name, put it after --: gotrail inspect -- ${a}`, EXIT.USAGE);
    }
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, 'offsets-from': { type: 'string' }, agent: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    out(inspectHelp);
    return EXIT.OK;
  }
  const from = values['offsets-from'];
  if (from !== undefined && from !== 'dwarf' && from !== 'types' && from !== 'db') {
    throw new CliError(`--offsets-from takes dwarf, types or db, not ${JSON.stringify(from)}\n\n${inspectHelp}`, EXIT.USAGE);
  }
  if (positionals.length !== 1) throw new CliError(`inspect takes one binary path or pid\n\n${inspectHelp}`, EXIT.USAGE);
  const target = positionals[0]!;
  const pid = /^\d+$/.test(target) ? Number(target) : undefined;
  const path = pid !== undefined ? `/proc/${pid}/exe` : target;
  if (pid !== undefined) {
    const why = unreadableExecutable(pid);
    if (why) throw new CliError(why, EXIT.FAILED);
  } else if (!existsSync(path)) {
    throw new CliError(`${target}: no such file`, EXIT.FAILED);
  }
  const proc = pid !== undefined ? processExecutable(pid) : undefined;
  const { plan, error } = planBinaryAt(path, probes, from ? { only: from } : {});
  if (!plan) {
    // the analysis's errors name the file already
    const msg = error?.message ?? 'analysis failed';
    const shown = proc ? `${proc.path} (pid ${pid})` : target;
    throw new CliError(msg.startsWith(`${path}:`) ? `${shown}: ${msg.slice(path.length + 1).trimStart()}` : `${shown}: ${msg}`, EXIT.FAILED);
  }
  // the process's executable by its real path (the analysis read it through /proc/PID/exe, which stays valid when the file is gone)
  if (proc) plan.path = proc.path;
  const kernel = await kernelView();
  const agentUrl = values.agent ?? 'http://127.0.0.1:9464';
  const agent = pid !== undefined ? await agentView(agentUrl, pid) : undefined;
  out(values.json
    ? JSON.stringify({ ...(planToJson(plan, kernel) as object), ...(proc ? { process: { pid, deleted: proc.deleted }, agent: agent ?? null } : {}) }, null, 2) + '\n'
    : renderPlan(plan, kernel, proc && { pid: pid!, deleted: proc.deleted }) + (pid !== undefined ? agentLines(agent, agentUrl).join('\n') + '\n' : ''));
  return plan.probes.some((p) => p.attachable) ? EXIT.OK : EXIT.NOTHING_ATTACHES;
}
