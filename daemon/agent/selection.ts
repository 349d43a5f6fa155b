/**
 * Which processes the user wants traced.
 *
 * Precedence, first match decides:
 * 1. gotrail's own process is never traced;
 * 2. exclude rules (executable, name, `GOTRAIL_TRACE=false`, command line,
 *    container, namespace, pod label) — any match excludes, whatever the
 *    includes say;
 * 3. the opt-in variable, when configured, must be `true` or `1`;
 * 4. include rules: with none, every Go process is included; with some, a
 *    process must match at least one (of any kind);
 * 5. executables under gotrail's install root (its own tools, such as the
 *    test collector) are excluded unless an include rule selected them in 4;
 * 6. well-known telemetry back-ends ({@link DEFAULT_TELEMETRY_BACKENDS}) are
 *    excluded unless an include rule on their executable, name or command
 *    line selected them in 4 (or they opted in with the opt-in variable);
 *    `defaultExcludes: false` turns this off.
 *
 * A process always opts out with `GOTRAIL_TRACE=false` (or `0`) in its
 * environment — as /proc/PID/environ shows it, i.e. as it was started.
 *
 * Facts beyond the executable and name (command line, environment, container,
 * pod) are asked for only when a rule needs them, through the callbacks of
 * {@link ProcessIdentity}. A pod that is not known yet makes the decision
 * `pending` when a namespace or label rule could change it: the caller asks
 * again later rather than deciding on missing facts.
 */
import { basename, matchesGlob } from 'node:path';
import { fileURLToPath } from 'node:url';
import { normalizeContainerId } from '../metadata/container.ts';

/** gotrail's install root (the repository or the image's directory), ending in `/`. */
export const INSTALL_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The environment variable with which any process opts out of tracing. */
export const OPT_OUT_ENV = 'GOTRAIL_TRACE';

/**
 * Executable base names (globs) of well-known telemetry back-ends, excluded
 * by default: their work is telemetry traffic — much of it gotrail's own
 * exports and what a collector forwards of them — so tracing them feeds
 * gotrail's output back into its input (an OTLP export to a traced
 * collector makes a span, exported in turn, …) and fills traces with
 * pipeline noise. The probes already skip requests on gotrail's own
 * connections, but not behind a NAT (a Kubernetes Service) nor what a
 * traced collector forwards; this rule covers both. Matched against the
 * executable's base name, not the process name, which the kernel cuts to
 * 15 characters. Only Go programs are listed: gotrail traces nothing else.
 */
export const DEFAULT_TELEMETRY_BACKENDS: readonly string[] = [
  // OpenTelemetry Collector distributions (otelcol, otelcol-contrib,
  // otelcol-k8s, otelcol-otlp, builder output), the AWS distribution
  'otelcol*', 'otelcorecol', 'awscollector',
  // Jaeger (v2 and the v1 components)
  'jaeger*',
  // Grafana: agents and back-ends
  'alloy', 'grafana-agent*', 'tempo', 'tempo-query', 'loki', 'mimir', 'pyroscope',
  // Prometheus-like metrics back-ends
  'prometheus', 'thanos', 'cortex', 'victoria-metrics*', 'victoria-logs*', 'vmagent*', 'vminsert*', 'vmselect*', 'vmstorage*',
  // Elastic APM
  'apm-server',
];

export interface SelectionRules {
  /** Executable path globs to include (e.g. `/usr/local/bin/*`). Default: all. */
  includeExe?: string[];
  /** Executable path globs to exclude. */
  excludeExe?: string[];
  /** Process names (comm, as in `ps`), globs, to include. */
  includeName?: string[];
  /** Process names (comm), globs, to exclude. */
  excludeName?: string[];
  /**
   * Command-line globs to include, matched against /proc/PID/cmdline with its
   * arguments joined by spaces. `*` matches any characters, `/` and spaces
   * included (`*--role=api*`), `?` one character.
   */
  includeCmdline?: string[];
  /** Command-line globs to exclude (as {@link includeCmdline}). */
  excludeCmdline?: string[];
  /**
   * Opt-in variable: when set, only processes whose environment sets it to
   * `true` or `1` (any case) are traced. Default: no opt-in needed.
   */
  optInEnv?: string;
  /** Container id prefixes to include (`docker://` and the like are ignored). */
  includeContainer?: string[];
  /** Container id prefixes to exclude. */
  excludeContainer?: string[];
  /** Kubernetes namespace globs to include (`*` and `?` as in {@link includeCmdline}). */
  includeNamespace?: string[];
  /** Kubernetes namespace globs to exclude. */
  excludeNamespace?: string[];
  /** Pod label rules to include: `key=value-glob`, or `key` for "has the label". */
  includePodLabel?: string[];
  /** Pod label rules to exclude (as {@link includePodLabel}). */
  excludePodLabel?: string[];
  /**
   * Executables under this directory are gotrail's own tools and are not
   * traced unless an include rule selects them. `false` turns this off.
   * Default: {@link INSTALL_ROOT}.
   */
  ownRoot?: string | false;
  /**
   * Executable base-name globs of telemetry back-ends, not traced unless an
   * include rule on their executable, name or command line (or the opt-in
   * variable) selects them. `false` turns this off.
   * Default: {@link DEFAULT_TELEMETRY_BACKENDS}.
   */
  defaultExcludes?: readonly string[] | false;
  /**
   * When set, no process is traced whatever the other rules say; names why
   * (e.g. `OTEL_SDK_DISABLED=true`), for logs and `/status`. Default: unset.
   */
  disabledBy?: string;
}

/** The part of a pod the rules look at. */
export interface PodView {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

export interface ProcessIdentity {
  pid: number;
  exe: string;
  name: string;
  /** Arguments joined by spaces; undefined when unreadable. Asked only by command-line rules. */
  cmdline?: () => string | undefined;
  /** Environment; undefined when unreadable. */
  env?: () => ReadonlyMap<string, string> | undefined;
  /** 64-hex container id; undefined outside containers. Asked only by container rules. */
  containerId?: () => string | undefined;
  /**
   * The process's pod; undefined outside Kubernetes; `'pending'` while its pod
   * is expected but not known yet. Asked only by namespace and label rules.
   */
  pod?: () => PodView | 'pending' | undefined;
}

export interface Decision {
  traced: boolean;
  /** Names the rule that decided, for logs and `inspect`. */
  reason: string;
  /** Not decided yet: facts a rule needs are still arriving (a pod not known yet). */
  pending?: boolean;
}

interface Pattern {
  text: string;
  re: RegExp;
}

interface LabelRule {
  text: string;
  key: string;
  value?: RegExp;
}

interface Compiled {
  includeCmdline: Pattern[];
  excludeCmdline: Pattern[];
  includeContainer: string[];
  excludeContainer: string[];
  includeNamespace: Pattern[];
  excludeNamespace: Pattern[];
  includeLabel: LabelRule[];
  excludeLabel: LabelRule[];
  hasIncludes: boolean;
  ownRoot: string | undefined;
  backends: Pattern[];
}

/** A glob where `*` matches any run of characters (separators included) and `?` one character. */
export function textGlob(glob: string): RegExp {
  let src = '';
  for (const ch of glob) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    else src += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, 's');
}

/** Parses `key=value-glob` or `key`; throws on an empty key. */
export function parseLabelRule(text: string): LabelRule {
  const eq = text.indexOf('=');
  const key = (eq < 0 ? text : text.slice(0, eq)).trim();
  if (!key) throw new Error(`pod label rule "${text}": expected key=value or key`);
  return eq < 0 ? { text, key } : { text, key, value: textGlob(text.slice(eq + 1)) };
}

/**
 * What is wrong with a glob of executables, or undefined: executables are
 * matched by their absolute path (/proc/PID/exe), so a glob that starts with
 * neither "/" nor a wildcard (`build/**`, `./app`) matches none.
 */
export function exeGlobProblem(glob: string): string | undefined {
  if (/^[/*?[{]/.test(glob)) return undefined;
  return `expected a glob of an absolute path (executables are matched by their absolute path): e.g. "/srv/**", or "**/${glob.replace(/^(\.\/)+/, '')}" in any directory`;
}

/** Problems with the rules, one message per bad rule (empty when all are usable). */
export function validateSelection(rules: SelectionRules): string[] {
  const errors: string[] = [];
  for (const r of [...(rules.includePodLabel ?? []), ...(rules.excludePodLabel ?? [])]) {
    try {
      parseLabelRule(r);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  for (const r of [...(rules.includeContainer ?? []), ...(rules.excludeContainer ?? [])]) {
    if (!/^[0-9a-f]{1,64}$/.test(normalizeContainerId(r))) errors.push(`container rule "${r}": expected a prefix of a hex container id`);
  }
  // executables are matched by their absolute path (/proc/PID/exe): a glob
  // that starts with neither "/" nor a wildcard matches none, so an include
  // of it selects nothing and an exclude of it excludes nothing, silently
  for (const g of [...(rules.includeExe ?? []), ...(rules.excludeExe ?? [])]) {
    const problem = exeGlobProblem(g);
    if (problem) errors.push(`executable rule "${g}": ${problem}`);
  }
  if (rules.optInEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(rules.optInEnv)) errors.push(`opt-in variable "${rules.optInEnv}": expected an environment variable name`);
  return errors;
}

/** Whether the rules look at Kubernetes pods (and so need the pod metadata). */
export function usesKubernetes(rules: SelectionRules): boolean {
  return [rules.includeNamespace, rules.excludeNamespace, rules.includePodLabel, rules.excludePodLabel].some((r) => (r?.length ?? 0) > 0);
}

const compiledCache = new WeakMap<SelectionRules, Compiled>();

function compile(rules: SelectionRules): Compiled {
  let c = compiledCache.get(rules);
  if (c) return c;
  const patterns = (globs?: string[]): Pattern[] => (globs ?? []).map((text) => ({ text, re: textGlob(text) }));
  const ownRoot = rules.ownRoot === false ? undefined : rules.ownRoot ?? INSTALL_ROOT;
  c = {
    includeCmdline: patterns(rules.includeCmdline),
    excludeCmdline: patterns(rules.excludeCmdline),
    includeContainer: (rules.includeContainer ?? []).map(normalizeContainerId),
    excludeContainer: (rules.excludeContainer ?? []).map(normalizeContainerId),
    includeNamespace: patterns(rules.includeNamespace),
    excludeNamespace: patterns(rules.excludeNamespace),
    includeLabel: (rules.includePodLabel ?? []).map(parseLabelRule),
    excludeLabel: (rules.excludePodLabel ?? []).map(parseLabelRule),
    hasIncludes: [rules.includeExe, rules.includeName, rules.includeCmdline, rules.includeContainer, rules.includeNamespace, rules.includePodLabel].some((r) => (r?.length ?? 0) > 0),
    ownRoot: ownRoot === undefined ? undefined : ownRoot.endsWith('/') ? ownRoot : `${ownRoot}/`,
    // base names hold no '/': a text glob matches them as a path glob would, compiled once
    backends: rules.defaultExcludes === false ? [] : patterns([...(rules.defaultExcludes ?? DEFAULT_TELEMETRY_BACKENDS)]),
  };
  compiledCache.set(rules, c);
  return c;
}

const anyGlob = (globs: string[] | undefined, value: string): string | undefined => globs?.find((g) => g === value || matchesGlob(value, g));
const anyPattern = (ps: Pattern[], value: string | undefined): Pattern | undefined => (value === undefined ? undefined : ps.find((p) => p.re.test(value)));
const anyPrefix = (prefixes: string[], id: string | undefined): string | undefined => (id === undefined ? undefined : prefixes.find((p) => id.startsWith(p)));
const anyLabel = (rules: LabelRule[], labels: Readonly<Record<string, string>>): LabelRule | undefined =>
  rules.find((r) => Object.hasOwn(labels, r.key) && (r.value === undefined || r.value.test(labels[r.key]!)));

/** Calls `f` at most once. */
function once<T>(f: (() => T) | undefined): () => T | undefined {
  let done = false;
  let v: T | undefined;
  return () => {
    if (!done) {
      v = f?.();
      done = true;
    }
    return v;
  };
}

const no = (reason: string): Decision => ({ traced: false, reason });
const yes = (reason: string): Decision => ({ traced: true, reason });
const short = (id: string): string => id.slice(0, 12);

export function decide(rules: SelectionRules, p: ProcessIdentity): Decision {
  if (p.pid === process.pid) return no('gotrail itself');
  if (rules.disabledBy) return no(`tracing is disabled (${rules.disabledBy})`);
  const c = compile(rules);
  const env = once(p.env);
  const cmdline = once(p.cmdline);
  const container = once(p.containerId);
  const pod = once(p.pod);

  // excludes, cheapest facts first
  const exe = anyGlob(rules.excludeExe, p.exe);
  if (exe) return no(`executable matches exclude rule ${exe}`);
  const name = anyGlob(rules.excludeName, p.name);
  if (name) return no(`process name matches exclude rule ${name}`);
  const optOut = env()?.get(OPT_OUT_ENV);
  if (optOut !== undefined && /^(false|0)$/i.test(optOut.trim())) return no(`its environment sets ${OPT_OUT_ENV}=${optOut}`);
  if (c.excludeCmdline.length) {
    const m = anyPattern(c.excludeCmdline, cmdline());
    if (m) return no(`command line matches exclude rule ${m.text}`);
  }
  if (c.excludeContainer.length) {
    const m = anyPrefix(c.excludeContainer, container());
    if (m) return no(`container ${short(container()!)} matches exclude rule ${m}`);
  }
  if (c.excludeNamespace.length || c.excludeLabel.length) {
    const pv = pod();
    if (pv === 'pending') return { traced: false, pending: true, reason: 'waiting for its Kubernetes pod (namespace and label exclude rules)' };
    if (pv) {
      const ns = anyPattern(c.excludeNamespace, pv.namespace);
      if (ns) return no(`namespace ${pv.namespace} matches exclude rule ${ns.text}`);
      const l = anyLabel(c.excludeLabel, pv.labels);
      if (l) return no(`pod label ${l.key}=${pv.labels[l.key]} matches exclude rule ${l.text}`);
    }
  }

  let optedIn = '';
  if (rules.optInEnv !== undefined) {
    const v = env()?.get(rules.optInEnv);
    if (v === undefined || !/^(true|1)$/i.test(v.trim())) {
      return no(`opt-in required: ${rules.optInEnv} is ${v === undefined ? 'not set' : `"${v}"`} in its environment (needs true or 1)`);
    }
    optedIn = ` (opted in with ${rules.optInEnv}=${v})`;
  }

  // a back-end is traced only when a rule names this very program (or it opted in)
  const backend = (): Pattern | undefined => (optedIn || !c.backends.length ? undefined : anyPattern(c.backends, basename(p.exe)));
  const backendRule = (b: Pattern): Decision => no(`excluded by the default telemetry back-end rule ${b.text} (an include rule on its executable, name or command line selects it; --no-default-excludes turns the rule off)`);
  if (!c.hasIncludes) {
    if (c.ownRoot && p.exe.startsWith(c.ownRoot)) return no(`executable under gotrail's install root ${c.ownRoot} (its own tools; an include rule selects it)`);
    const b = backend();
    if (b) return backendRule(b);
    return yes(optedIn ? `opted in with ${rules.optInEnv}` : 'every Go process is traced by default');
  }
  const incExe = anyGlob(rules.includeExe, p.exe);
  if (incExe) return yes(`executable matches include rule ${incExe}${optedIn}`);
  const incName = anyGlob(rules.includeName, p.name);
  if (incName) return yes(`process name matches include rule ${incName}${optedIn}`);
  if (c.includeCmdline.length) {
    const m = anyPattern(c.includeCmdline, cmdline());
    if (m) return yes(`command line matches include rule ${m.text}${optedIn}`);
  }
  const b = backend();
  if (b) return backendRule(b);
  if (c.includeContainer.length) {
    const m = anyPrefix(c.includeContainer, container());
    if (m) return yes(`container ${short(container()!)} matches include rule ${m}${optedIn}`);
  }
  if (c.includeNamespace.length || c.includeLabel.length) {
    const pv = pod();
    if (pv === 'pending') return { traced: false, pending: true, reason: 'waiting for its Kubernetes pod (namespace and label include rules)' };
    if (pv) {
      const ns = anyPattern(c.includeNamespace, pv.namespace);
      if (ns) return yes(`namespace ${pv.namespace} matches include rule ${ns.text}${optedIn}`);
      const l = anyLabel(c.includeLabel, pv.labels);
      if (l) return yes(`pod label ${l.key}=${pv.labels[l.key]} matches include rule ${l.text}${optedIn}`);
    }
  }
  return no('matches no include rule');
}
