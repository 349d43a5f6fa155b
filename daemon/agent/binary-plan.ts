/**
 * What gotrail would do with one Go binary: for every probe, whether it can
 * attach and, if not, exactly why; the sites it would probe and the offsets it
 * would use. `gotrail inspect` prints this, the agent executes it, and both
 * use the same reasons.
 */
import { openGoBinary, type GoBinaryError, type GoBinary, type GoFunction, type TrapKind } from '../analysis/go-binary.ts';
import { readStructOffsets } from '../offsets/dwarf.ts';
import { compareSemver, parseGoVersion, parseSemver, release } from '../offsets/version.ts';
import { resolveOffsets, type OffsetDisagreement, type OffsetSourceKind } from '../offsets/resolve.ts';
import { fieldModule, optionalFields, requiredFields, type ProbeDescriptor, type ProbedFunction } from '../probes/types.ts';

export const GOID_FIELD = 'runtime.g.goid';

export interface SiteSet {
  program: string;
  symbol: string;
  /**
   * `at-err-check`: the branch on a call's error result (`atErrCheck`), which
   * ends the calls that succeeded.
   */
  role: 'entry' | 'return' | 'after-call' | 'at-call' | 'at-err-check';
  /** file offsets */
  offsets: number[];
  /**
   * The entry site is the stack check's branch, where a hit whose branch is
   * taken (the stack grows, and the function is entered again) must be
   * skipped: the attach cookie says so to `gt_probe_enter`.
   */
  atStackCheck?: boolean;
  /**
   * Per offset, whether the kernel emulates the probed instruction or
   * single-steps it (see `kernelEmulates`): what a hit there costs, for the
   * overhead estimate. Absent when the instructions could not be read.
   */
  trapKinds?: TrapKind[];
}

export interface ProbePlan {
  probe: ProbeDescriptor;
  attachable: boolean;
  /** Why the probe cannot attach (attachable = false). */
  reason?: string;
  /** What works less well, and why (attachable, but degraded). */
  degraded: string[];
  /** Offsets resolved from DB extrapolation rather than DWARF or a verified range. */
  unverified: string[];
  sites: SiteSet[];
  offsets: Record<string, number>;
  offsetSources: Record<string, string>;
  missingOptional: string[];
  /** The binary's version of the probe's module (the Go version for `std`), when known. */
  moduleVersion?: string;
  /** Fields whose offset differs between DWARF, type metadata and the database (the first of those wins). */
  disagreements: OffsetDisagreement[];
}

/** The binary's own sources of struct offsets, read once per binary. */
export interface OffsetInputs {
  dwarf?: Map<string, number>;
  types?: Map<string, number>;
  /** Restrict resolution to one source (`gotrail inspect --offsets-from`). */
  only?: OffsetSourceKind;
}

export interface BinaryPlan {
  path: string;
  goVersion: string;
  modules: Array<{ path: string; version: string }>;
  stripped: boolean;
  hasDwarf: boolean;
  pie: boolean;
  functionSource: 'symtab' | 'pclntab';
  goidOffset?: number;
  /** Source of {@link BinaryPlan.goidOffset}. */
  goidSource?: string;
  /** Layout the Go type metadata was read with (`go1.20`), when it was read. */
  typesLayout?: string;
  /** Why the Go type metadata could not be used (offsets then come from DWARF or the database). */
  typesError?: string;
  /** Milliseconds spent reading the type metadata. */
  typesMs?: number;
  /** Disagreements over runtime.g.goid (probe fields are in each probe's plan). */
  disagreements: OffsetDisagreement[];
  /** Set when nothing can attach to this binary at all. */
  reason?: string;
  probes: ProbePlan[];
}

/** Go's register ABI (arguments and g in registers) arrived on amd64 in Go 1.17; the probes depend on it. */
export function goVersionSupported(goVersion: string): string | undefined {
  const m = /^go(\d+)\.(\d+)/.exec(goVersion);
  if (!m) return `unknown Go version "${goVersion}"`;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major !== 1 || minor < 17) return `Go version ${goVersion} predates the register-based calling convention gotrail needs (Go >= 1.17)`;
  return undefined;
}

function moduleVersion(bin: GoBinary, module: string): string | undefined {
  return module === 'std' ? bin.goVersion : bin.moduleVersion(module);
}

function dwarfOffsets(bin: GoBinary, wanted: string[]): { offsets?: Map<string, number>; error?: string } {
  if (!bin.hasDwarf) return {};
  try {
    const sections = bin.dwarfSections();
    if (!sections) return {};
    return { offsets: readStructOffsets(sections, wanted) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/** Whether any function of Go package `pkg` is in the binary (methods too: `pkg.(*T).m`). */
function packageLinked(bin: GoBinary, pkg: string): boolean {
  for (const f of bin.functions()) if (f.name.startsWith(`${pkg}.`)) return true;
  return false;
}

function typeOffsets(bin: GoBinary, wanted: string[]): { offsets?: Map<string, number>; layout?: string; error?: string; ms: number } {
  const t0 = performance.now();
  try {
    const types = bin.goTypes();
    return { offsets: types.fieldOffsets(wanted).offsets, layout: types.layout, ms: performance.now() - t0 };
  } catch (e) {
    return { error: (e as Error).message, ms: performance.now() - t0 };
  }
}

function emptyPlan(probe: ProbeDescriptor): ProbePlan {
  return { probe, attachable: false, degraded: [], unverified: [], sites: [], offsets: {}, offsetSources: {}, missingOptional: [], disagreements: [] };
}

/**
 * Adds the sites of `probed` to `plan`; false, with `plan.reason` set, when
 * the probe cannot attach (a required function, RET or call not found, code
 * that does not decode).
 */
function planFunction(bin: GoBinary, plan: ProbePlan, probed: ProbedFunction): boolean {
  const names = [probed.symbol, ...(probed.alternativeSymbols ?? [])];
  const present = names.filter((n) => bin.findFunction(n));
  // calls to probe: the first of the names that makes each of them once
  // (which closure of a function recovers depends on the Go that compiled it)
  const symbol = (probed.atCalls && present.length > 1 ? present.find((n) => callsEachOnce(bin, n, probed.atCalls!)) : undefined) ?? present[0] ?? probed.symbol;
  const fn = { ...probed, symbol };
  const f = bin.findFunction(symbol);
  if (!f && fn.whenLinked) return true;
  if (!f && fn.optional) {
    plan.degraded.push(`${fn.optional}: function ${names.join(' or ')} not found`);
    return true;
  }
  if (!f) {
    plan.reason = packageLinked(bin, plan.probe.goPackage)
      ? `${plan.probe.goPackage} is linked, but ${fn.absentMeans ?? `nothing in this program calls ${fn.symbol}`} (function ${fn.symbol} not found)`
      : `${plan.probe.goPackage} is not linked into this program (function ${fn.symbol} not found)`;
    return false;
  }
  // all of the function's sites, or none of them
  const sites: SiteSet[] = [];
  const lacks = (why: string): boolean => {
    if (fn.optional) {
      plan.degraded.push(`${fn.optional}: ${why}`);
      return true;
    }
    plan.reason = why;
    return false;
  };
  try {
    if (fn.entryProgram) {
      if (fn.entryAtStackCheck) sites.push({ program: fn.entryProgram, symbol: fn.symbol, role: 'entry', offsets: [bin.stackCheckSite(f)] });
      else {
        // one trap per call where the instruction after the check would be single-stepped (Go before 1.21)
        const site = bin.cheapEntrySite(f);
        sites.push({ program: fn.entryProgram, symbol: fn.symbol, role: 'entry', offsets: [site.offset], ...(site.atStackCheck ? { atStackCheck: true } : {}) });
      }
    }
    if (fn.returnProgram) {
      let rets = bin.retSites(f);
      if (rets.length === 0) return lacks(`function ${fn.symbol} has no RET instruction to probe`);
      if (fn.atErrCheck) {
        const callee = bin.findFunction(fn.atErrCheck.callee);
        const check = callee ? bin.errCheckSite(f, callee) : { reason: 'the callee is not in the binary' };
        if ('reason' in check) return lacks(`function ${fn.symbol} has no error check of its call of ${fn.atErrCheck.callee} to probe: ${check.reason}`);
        sites.push({ program: fn.atErrCheck.program, symbol: fn.symbol, role: 'at-err-check', offsets: [check.branch] });
        // the RETs only a success reaches: the branch has ended those calls
        rets = rets.filter((r) => !check.successRets.includes(r));
        if (rets.length === 0) return lacks(`function ${fn.symbol} has no RET left for the calls that fail`);
      }
      sites.push({ program: fn.returnProgram, symbol: fn.symbol, role: 'return', offsets: rets });
    }
    if (fn.afterCall) {
      const callee = bin.findFunction(fn.afterCall.callee);
      const after = callee ? bin.callReturnSites(f, callee) : [];
      if (after.length === 0) return lacks(`function ${fn.symbol} has no call of ${fn.afterCall.callee} to probe`);
      sites.push({ program: fn.afterCall.program, symbol: fn.symbol, role: 'after-call', offsets: after });
    }
    for (const call of fn.atCalls ?? []) {
      const calleeNames = [call.callee, ...(call.alternativeCallees ?? [])];
      const at = callSitesOf(bin, f, calleeNames);
      // one call per run of the function is what the site stands for
      if (at.length === 0) return lacks(`function ${fn.symbol} has no call of ${calleeNames.join(' or ')} to probe`);
      if (at.length > 1) return lacks(`function ${fn.symbol} has ${at.length} calls of ${calleeNames.join(' or ')}, not one`);
      sites.push({ program: call.program, symbol: fn.symbol, role: 'at-call', offsets: at });
    }
  } catch (e) {
    return lacks(`cannot decode ${fn.symbol}: ${(e as Error).message}`);
  }
  plan.sites.push(...sites);
  return true;
}

/** The direct CALLs in `f` of the first of `calleeNames` the binary has (file offsets). */
function callSitesOf(bin: GoBinary, f: GoFunction, calleeNames: string[]): number[] {
  const callee = calleeNames.map((n) => bin.findFunction(n)).find((c) => c !== undefined);
  return callee ? bin.callSites(f, callee) : [];
}

/** Whether function `symbol` makes exactly one direct CALL of each of `atCalls`' callees; false where its code does not decode. */
function callsEachOnce(bin: GoBinary, symbol: string, atCalls: NonNullable<ProbedFunction['atCalls']>): boolean {
  const f = bin.findFunction(symbol)!;
  try {
    return atCalls.every((c) => callSitesOf(bin, f, [c.callee, ...(c.alternativeCallees ?? [])]).length === 1);
  } catch {
    return false;
  }
}

export function planProbe(bin: GoBinary, probe: ProbeDescriptor, inputs: OffsetInputs | Map<string, number> | undefined, goidOffset: number | undefined): ProbePlan {
  const plan = emptyPlan(probe);
  const src: OffsetInputs = inputs instanceof Map ? { dwarf: inputs } : (inputs ?? {});
  const version = moduleVersion(bin, probe.module);
  if (!version) {
    plan.reason = probe.module === 'std' ? 'no Go version in the binary' : `module ${probe.module} is not linked into this binary`;
    return plan;
  }
  plan.moduleVersion = version;
  if (goidOffset === undefined) {
    plan.reason = `no offset for ${GOID_FIELD} at ${bin.goVersion}: goroutines cannot be told apart`;
    return plan;
  }
  for (const probed of probe.functions) if (!planFunction(bin, plan, probed)) return plan;
  const pref = probe.preferredSites;
  if (pref) {
    // planned on a plan of its own: a set whose calls are not all there leaves nothing behind
    const preferred = emptyPlan(probe);
    const usable = !(pref.unless ?? []).some((name) => bin.findFunction(name)) && pref.functions.every((fn) => planFunction(bin, preferred, { ...fn, optional: undefined }));
    const chosen = usable ? preferred : emptyPlan(probe);
    if (!usable && !pref.otherwise.every((fn) => planFunction(bin, chosen, fn))) {
      plan.reason = chosen.reason;
      return plan;
    }
    plan.degraded.push(...chosen.degraded);
    plan.sites.push(...chosen.sites);
  }
  const required = requiredFields(probe);
  const optional = optionalFields(probe);
  // standard-library fields resolve at the Go version, a field of another
  // module (a driver's struct) at that module's version, the others at the
  // probe's module version
  const wanted = [...required, ...optional];
  const res = resolveOffsets({ module: probe.module, version, fields: wanted.filter((f) => fieldModule(probe, f) === probe.module) }, src);
  const others = [...new Set(wanted.map((f) => fieldModule(probe, f)))].filter((m) => m !== probe.module);
  for (const mod of others) {
    const r = resolveOffsets({ module: mod, version: moduleVersion(bin, mod) ?? '', fields: wanted.filter((f) => fieldModule(probe, f) === mod) }, src);
    Object.assign(res.offsets, r.offsets);
    Object.assign(res.source, r.source);
    res.missing.push(...r.missing);
    res.unverified.push(...r.unverified);
    res.disagreements.push(...r.disagreements);
  }
  plan.offsets = res.offsets;
  plan.offsetSources = res.source;
  plan.unverified = res.unverified;
  plan.disagreements = res.disagreements;
  const missingRequired = res.missing.filter((m) => required.includes(m.field));
  if (missingRequired.length) {
    plan.reason = missingRequired.map((m) => m.reason).join('; ');
    return plan;
  }
  // a field whose alternative resolved is not missing
  const covered = new Set<string>();
  for (const [a, b] of probe.alternativeFields ?? []) {
    if (res.offsets[a] !== undefined) covered.add(b);
    if (res.offsets[b] !== undefined) covered.add(a);
  }
  // a field of a feature the binary's Go release predates is no loss
  const goVersion = parseGoVersion(bin.goVersion);
  const predates = (field: string): boolean => {
    const since = probe.fields[field]?.goSince;
    const want = since === undefined ? null : parseSemver(`${since}.0`);
    return want !== null && goVersion.ok && compareSemver(release(goVersion.version), want) < 0;
  };
  // a field of a library the binary does not link is no loss either
  const unlinked = (field: string): boolean => {
    const mod = probe.fields[field]?.module;
    return mod !== undefined && bin.moduleVersion(mod) === undefined;
  };
  const missing = res.missing.filter((m) => !covered.has(m.field) && !predates(m.field) && !unlinked(m.field));
  plan.missingOptional = missing.filter((m) => optional.includes(m.field)).map((m) => m.field);
  for (const m of missing) {
    if (!optional.includes(m.field)) continue;
    plan.degraded.push(`${probe.fields[m.field]?.optional ?? 'reduced detail'}: ${m.reason}`);
  }
  // fields the probe could misread here: as good as missing, and said why
  for (const u of probe.unreadWhere ?? []) {
    if (!bin.findFunction(u.linked)) continue;
    const dropped = u.fields.filter((f) => plan.offsets[f] !== undefined && !plan.missingOptional.includes(f));
    if (dropped.length === 0) continue;
    plan.missingOptional.push(...dropped);
    plan.degraded.push(u.loses);
  }
  plan.degraded = [...new Set(plan.degraded)];
  try {
    for (const s of plan.sites) s.trapKinds = bin.trapKinds(s.offsets);
  } catch {
    // the sites decoded a moment ago: without their kinds the estimate counts them single-stepped
  }
  plan.attachable = true;
  return plan;
}

/**
 * Plans every probe on `bin`. Offsets come from the binary's DWARF, then its
 * Go type metadata, then the offsets database; `opts.only` limits them to one
 * source.
 */
export function planBinary(bin: GoBinary, probes: readonly ProbeDescriptor[], opts: { only?: OffsetSourceKind } = {}): BinaryPlan {
  const plan: BinaryPlan = {
    path: bin.path,
    goVersion: bin.goVersion,
    modules: bin.modules.map((m) => ({ path: m.path, version: m.version })),
    stripped: bin.stripped,
    hasDwarf: bin.hasDwarf,
    pie: bin.pie,
    functionSource: bin.functionSource,
    disagreements: [],
    probes: [],
  };
  const unsupported = goVersionSupported(bin.goVersion);
  const wanted = [GOID_FIELD, ...probes.flatMap((p) => Object.keys(p.fields))];
  const only = opts.only;
  const dw = unsupported || only === 'types' || only === 'db' ? {} : dwarfOffsets(bin, wanted);
  const ty = unsupported || only === 'dwarf' || only === 'db' ? undefined : typeOffsets(bin, wanted);
  if (ty) {
    if (ty.layout !== undefined) plan.typesLayout = ty.layout;
    if (ty.error !== undefined) plan.typesError = ty.error;
    plan.typesMs = ty.ms;
  }
  const inputs: OffsetInputs = { ...(dw.offsets ? { dwarf: dw.offsets } : {}), ...(ty?.offsets ? { types: ty.offsets } : {}), ...(only ? { only } : {}) };
  const goid = resolveOffsets({ module: 'std', version: bin.goVersion, fields: [GOID_FIELD] }, inputs);
  plan.goidOffset = goid.offsets[GOID_FIELD];
  if (goid.source[GOID_FIELD] !== undefined) plan.goidSource = goid.source[GOID_FIELD];
  plan.disagreements = goid.disagreements;
  for (const probe of probes) {
    if (unsupported) {
      plan.probes.push({ ...emptyPlan(probe), reason: unsupported });
      continue;
    }
    const p = planProbe(bin, probe, inputs, plan.goidOffset);
    if (dw.error) p.degraded.push(`DWARF unreadable, offsets from the type metadata or the database: ${dw.error}`);
    plan.probes.push(p);
  }
  for (const p of plan.probes) {
    const needs = p.probe.onlyWith;
    if (!p.attachable || !needs || plan.probes.some((o) => o.attachable && needs.includes(o.probe.id))) continue;
    p.attachable = false;
    p.reason = `it serves ${needs.join(' and ')}, none of which attaches to this program`;
  }
  if (unsupported) plan.reason = unsupported;
  return plan;
}

/** Every disagreement of a plan (runtime.g.goid and each probe's fields), each field once. */
export function planDisagreements(plan: BinaryPlan): OffsetDisagreement[] {
  const seen = new Map<string, OffsetDisagreement>();
  for (const d of [...plan.disagreements, ...plan.probes.flatMap((p) => p.disagreements)]) if (!seen.has(d.field)) seen.set(d.field, d);
  return [...seen.values()];
}

/** Opens and plans a binary; analysis errors become a plan with a reason instead of an exception. */
export function planBinaryAt(path: string, probes: readonly ProbeDescriptor[], opts: { only?: OffsetSourceKind } = {}): { plan?: BinaryPlan; error?: GoBinaryError | Error } {
  let bin: GoBinary | undefined;
  try {
    bin = openGoBinary(path);
    return { plan: planBinary(bin, probes, opts) };
  } catch (e) {
    return { error: e as Error };
  } finally {
    bin?.close();
  }
}
