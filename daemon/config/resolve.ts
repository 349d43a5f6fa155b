/**
 * Every setting of `gotrail run` from its four layers. Precedence, per
 * setting: **flag > environment variable > configuration file > default**.
 * A list given by a flag (e.g. `--include-exe`) replaces the file's list of
 * the same key rather than adding to it. Flags and the environment are read
 * once at start; the file is read again on reload, so a setting a flag or
 * variable fixes does not follow the file (the log says so).
 */
import type { ExporterKind } from '../export/exporters.ts';
import { ExportConfigError, FROM_FILE, resolveExportConfig, type ExportConfig } from '../export/config.ts';
import { exeGlobProblem, validateSelection, type SelectionRules } from '../agent/selection.ts';
import type { MapSizes } from '../agent/bpf-runtime.ts';
import type { AdminAccess } from '../agent/metrics.ts';
import { DEFAULT_BUDGET_WINDOW_MS, parseBudgetPercent, type BudgetSettings } from '../agent/budget.ts';
import { isLogLevel, type LogLevel } from '../util/log.ts';
import type { ConfigFile } from './file.ts';
import { parseDestination, type PropagationOptions } from '../agent/propagation.ts';
import { MAX_TIMER_MS, parseTimerMillis, TIMER_TOO_LONG } from '../util/timers.ts';
import { withoutCredentials } from '../util/url-credentials.ts';

/** The values of OTEL_TRACES_SAMPLER gotrail supports (see export/sampler.ts). */
export const SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;

/** `gotrail run`'s flags as parsed (strings), undefined when absent. */
export interface RunFlags {
  'include-exe'?: string[]; 'exclude-exe'?: string[];
  'include-name'?: string[]; 'exclude-name'?: string[];
  'include-cmdline'?: string[]; 'exclude-cmdline'?: string[];
  'include-container'?: string[]; 'exclude-container'?: string[];
  'include-namespace'?: string[]; 'exclude-namespace'?: string[];
  'include-pod-label'?: string[]; 'exclude-pod-label'?: string[];
  'opt-in-env'?: string;
  'no-default-excludes'?: boolean;
  'no-inject-traceparent'?: boolean;
  'inject-allow'?: string[];
  'inject-deny'?: string[];
  'no-inject-exe'?: string[];
  'no-local-linking'?: boolean;
  kubernetes?: string;
  exporter?: string;
  'max-queue-size'?: string;
  'max-export-batch-size'?: string;
  'schedule-delay'?: string;
  'export-timeout'?: string;
  'max-concurrent-exports'?: string;
  'otlp-endpoint'?: string;
  'metrics-address'?: string;
  'admin-access'?: string;
  'scan-interval'?: string;
  linger?: string;
  'max-processes'?: string;
  'max-inflight'?: string;
  'ring-buffer-bytes'?: string;
  'max-http-routes'?: string;
  'db-query-text'?: boolean;
  'overhead-budget'?: string;
  'overhead-budget-window'?: string;
  'kafka-message-key'?: boolean;
  'log-level'?: string;
  'debug-probe-hits'?: string;
}

export type SamplerName = (typeof SAMPLERS)[number];

export interface SamplingConfig {
  /** OTEL_TRACES_SAMPLER's values gotrail supports; default `parentbased_always_on` (the specification's) */
  sampler: SamplerName;
  /** traceidratio, parentbased_traceidratio: fraction of traces kept, 0–1; default 1 */
  ratio: number;
}

/** The OTLP exporter's settings given by the file; absent where an OTEL_EXPORTER_OTLP_* variable or the flag decides. */
export interface OtlpConfig {
  endpoint?: string;
  headers?: Record<string, string>;
  timeoutMillis?: number;
}

/** Every setting of `gotrail run`, resolved. */
export interface RunConfig {
  selection: SelectionRules;
  kubernetes: 'auto' | 'off';
  export: ExportConfig;
  otlp: OtlpConfig;
  sampling: SamplingConfig;
  /** `host:port`, or `off` */
  metricsAddress: string;
  /** who may use /status and POST /calibrate on the metrics address (--admin-access); default `loopback` */
  adminAccess: AdminAccess;
  scanIntervalMs?: number;
  lingerMs?: number;
  mapSizes: MapSizes;
  /** distinct http.route values per service (--max-http-routes) */
  maxHttpRoutes?: number;
  logLevel: LogLevel;
  /** db.query.text (sanitised) on database/sql spans (--db-query-text); default off */
  dbQueryText: boolean;
  /** the overhead budget (--overhead-budget, --overhead-budget-window); undefined: off (default) */
  overheadBudget: BudgetSettings | undefined;
  /** messaging.kafka.message.key on Kafka spans (--kafka-message-key); default off */
  kafkaMessageKey: boolean;
  debugProbeHitsPath?: string;
  /** traceparent injection and node-local linking (--no-inject-traceparent, --inject-allow, --inject-deny, --no-local-linking) */
  propagation: PropagationOptions;
  /**
   * OTEL_SDK_DISABLED=true (case-insensitive; any other value is false, with
   * a warning unless `false`): no process is traced and nothing is exported
   * (selection.disabledBy set, exporter `none`, no traceparent injection);
   * the agent keeps serving metrics, /healthz, /readyz and /status.
   */
  sdkDisabled: boolean;
  /** where each setting came from: a flag, a variable, `config file` or `default` */
  sources: Record<string, string>;
  /** values ignored with a warning (the OpenTelemetry variables' documented behaviour), to be logged */
  warnings?: string[];
}

/** OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT=0, "no limit", as given to the exporter: 2^31 - 1 ms (about 24.8 days). */
export const OTLP_TIMEOUT_NO_LIMIT = 2 ** 31 - 1;

/** The OTLP exporter's timeout when nothing sets one (the specification's default, 10 s), in ms. */
export const DEFAULT_OTLP_TIMEOUT_MS = 10_000;

/** The OTLP/HTTP traces URL when nothing sets one (the specification's default). */
export const DEFAULT_OTLP_TRACES_ENDPOINT = 'http://localhost:4318/v1/traces';

/**
 * The traces URL of a generic OTEL_EXPORTER_OTLP_ENDPOINT: the
 * specification's rule, `v1/traces` appended to its path (after a `/` when
 * the path does not end with one), as the exporter does with the variable.
 */
export function withTracesPath(base: string): string {
  return `${base}${base.endsWith('/') ? '' : '/'}v1/traces`;
}

/** A setting that cannot be used; the message names the flag, variable or key. */
export class RunConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RunConfigError';
  }
}

const SELECTION_KEYS = [
  ['includeExe', 'include-exe'], ['excludeExe', 'exclude-exe'],
  ['includeName', 'include-name'], ['excludeName', 'exclude-name'],
  ['includeCmdline', 'include-cmdline'], ['excludeCmdline', 'exclude-cmdline'],
  ['includeContainer', 'include-container'], ['excludeContainer', 'exclude-container'],
  ['includeNamespace', 'include-namespace'], ['excludeNamespace', 'exclude-namespace'],
  ['includePodLabel', 'include-pod-label'], ['excludePodLabel', 'exclude-pod-label'],
] as const;

/** Settings only read at start: a change in the file is logged and waits for a restart. */
export const START_ONLY = ['kubernetes', 'metricsAddress', 'adminAccess', 'scanIntervalMs', 'lingerMs', 'mapSizes', 'maxHttpRoutes', 'debugProbeHitsPath', 'propagation'] as const;

/**
 * The most entries the kernel gives a BPF hash or LRU hash map (the maps
 * `--max-processes` and `--max-inflight` size): it rounds the count up to a
 * power of two of buckets, 16 bytes each, whose total must fit in 32 bits
 * (kernel/bpf/hashtab.c, htab_map_alloc: E2BIG beyond). Memory may refuse
 * far smaller maps; this is the bound no machine passes.
 */
export const MAX_HASH_MAP_ENTRIES = 2 ** 27;

/** The largest BPF ring buffer: its size is the map's 32-bit max_entries, a power of two (kernel/bpf/ringbuf.c). */
export const MAX_RING_BUFFER_BYTES = 2 ** 31;

/** Whether `n` (a safe integer >= 1) is a power of two; arithmetic, as bitwise operators wrap at 2^32. */
export function isPowerOfTwo(n: number): boolean {
  return n >= 1 && Number.isInteger(Math.log2(n)) && 2 ** Math.log2(n) === n;
}

/** What a count accepts, as every message about it says it: `an integer >= 16 (requests)`, `an integer from 16 to 134217728 (requests)`. */
export function countRange(min: number, unit: string, max?: number, pow2 = false): string {
  const what = pow2 ? 'a power of two' : 'an integer';
  return `${what} ${max === undefined ? `>= ${min}` : `from ${min} to ${max}`} (${unit})`;
}

function count(name: string, v: string | undefined, min: number, unit: string, max?: number, pow2 = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isSafeInteger(n) || n < min || (max !== undefined && n > max) || (pow2 && !isPowerOfTwo(n))) {
    throw new RunConfigError(`--${name}: expected ${countRange(min, unit, max, pow2)}, got "${v}"`);
  }
  return n;
}

/**
 * OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, else the file, else the
 * default. A variable's value that cannot be used is ignored with a warning
 * (as the specification's environment variables require: "generate a
 * warning and gracefully ignore the setting"), the file's are refused
 * earlier by its schema.
 */
function parseSampling(env: NodeJS.ProcessEnv, file: ConfigFile['sampling'], sources: Record<string, string>, warnings: string[]): SamplingConfig {
  const fromEnv = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  let sampler: SamplerName = 'parentbased_always_on';
  sources['sampling.sampler'] = 'default';
  // the specification's enum values are case-insensitive (ALWAYS_OFF is always_off)
  const esGiven = fromEnv('OTEL_TRACES_SAMPLER');
  const es = esGiven?.toLowerCase();
  const fileSampler = (): void => {
    if (file?.sampler !== undefined) {
      sampler = file.sampler;
      sources['sampling.sampler'] = FROM_FILE;
    }
  };
  if (es !== undefined && (SAMPLERS as readonly string[]).includes(es)) {
    sampler = es as SamplerName;
    sources['sampling.sampler'] = 'OTEL_TRACES_SAMPLER';
  } else {
    fileSampler();
    if (es !== undefined) warnings.push(`OTEL_TRACES_SAMPLER: expected one of ${SAMPLERS.join(', ')}, got "${esGiven}": ignored, using ${sampler}`);
  }
  let ratio = 1;
  sources['sampling.ratio'] = 'default';
  const ea = fromEnv('OTEL_TRACES_SAMPLER_ARG');
  // the variable is only read for the ratio samplers (the specification
  // ignores it otherwise), whether the variable or the file chose the sampler:
  // it wins over the file's ratio, as every variable wins over the file
  const ratioSampler = sampler === 'traceidratio' || sampler === 'parentbased_traceidratio';
  const fileRatio = (): void => {
    if (file?.ratio !== undefined) {
      ratio = file.ratio;
      sources['sampling.ratio'] = FROM_FILE;
    }
  };
  if (ea !== undefined && ratioSampler) {
    const n = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(ea) ? Number(ea) : NaN;
    if (Number.isFinite(n) && n >= 0 && n <= 1) {
      ratio = n;
      sources['sampling.ratio'] = 'OTEL_TRACES_SAMPLER_ARG';
    } else {
      fileRatio();
      warnings.push(`OTEL_TRACES_SAMPLER_ARG: expected a sampling probability from 0 to 1, got "${ea}": ignored, using ${file?.ratio !== undefined ? `${file.ratio} (configuration file)` : 'the default 1.0'}`);
    }
  } else {
    fileRatio();
  }
  return { sampler, ratio };
}

/**
 * Resolves every setting: flag, else variable, else file, else default.
 * @throws RunConfigError naming the flag, variable or key of a value that cannot be used.
 */
export function resolveRunConfig(flags: RunFlags, env: NodeJS.ProcessEnv = process.env, file: ConfigFile = {}): RunConfig {
  const sources: Record<string, string> = {};
  const pick = <T>(key: string, flagName: string, flag: T | undefined, fileValue: T | undefined): T | undefined => {
    if (flag !== undefined) {
      sources[key] = `--${flagName}`;
      return flag;
    }
    sources[key] = fileValue !== undefined ? FROM_FILE : 'default';
    return fileValue;
  };

  const selection: SelectionRules = {};
  for (const [key, flag] of SELECTION_KEYS) {
    const v = pick(`selection.${key}`, flag, flags[flag], file.selection?.[key]);
    if (v !== undefined) selection[key] = [...v];
  }
  const optIn = pick('selection.optInEnv', 'opt-in-env', flags['opt-in-env'], file.selection?.optInEnv);
  if (optIn !== undefined) selection.optInEnv = optIn;
  const defaultExcludes = pick('selection.defaultExcludes', 'no-default-excludes', flags['no-default-excludes'] ? false : undefined, file.selection?.defaultExcludes);
  if (defaultExcludes === false) selection.defaultExcludes = false;
  const ruleErrors = validateSelection(selection);
  if (ruleErrors.length) throw new RunConfigError(ruleErrors.join('\n'));

  const kubernetes = pick('kubernetes', 'kubernetes', flags.kubernetes, file.kubernetes) ?? 'auto';
  if (kubernetes !== 'auto' && kubernetes !== 'off') throw new RunConfigError(`--kubernetes: expected auto or off, got "${kubernetes}"`);

  let exportConfig: ExportConfig;
  try {
    const b = file.exporter?.batch;
    exportConfig = resolveExportConfig({
      exporter: flags.exporter,
      maxQueueSize: flags['max-queue-size'],
      maxExportBatchSize: flags['max-export-batch-size'],
      scheduleDelay: flags['schedule-delay'],
      exportTimeout: flags['export-timeout'],
      maxConcurrentExports: flags['max-concurrent-exports'],
    }, env, {
      exporter: file.exporter?.kind as ExporterKind | undefined,
      maxQueueSize: b?.maxQueueSize, maxExportBatchSize: b?.maxExportBatchSize, scheduledDelayMillis: b?.scheduleDelayMillis,
      exportTimeoutMillis: b?.exportTimeoutMillis, maxConcurrentExports: b?.maxConcurrentExports,
    });
  } catch (e) {
    if (e instanceof ExportConfigError) throw new RunConfigError(e.message);
    throw e;
  }
  for (const [k, v] of Object.entries(exportConfig.sources)) sources[`export.${k}`] = v;

  // The OTLP exporter reads OTEL_EXPORTER_OTLP_* itself and lets values given
  // in code win over them: the file's values are passed only where no
  // variable is set, so that a variable wins over the file.
  const set = (name: string): boolean => (env[name] ?? '').trim() !== '';
  const otlp: OtlpConfig = {};
  const fo = file.exporter?.otlp;
  const warnings: string[] = [...exportConfig.warnings];
  const httpUrl = (v: string): boolean => {
    try {
      return /^https?:$/.test(new URL(v).protocol);
    } catch {
      return false;
    }
  };
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    if (flags['otlp-endpoint'] === undefined && set(name) && !httpUrl(env[name]!.trim())) {
      warnings.push(`${name}: expected an http:// or https:// URL, got "${withoutCredentials(env[name]!)}": the OTLP exporter ignores it (the start line's endpoint= says where spans go)`);
    }
  }
  // The exporter ignores these without a word (its diagnostics go nowhere):
  // a user who set them expects them to act, so say they do not.
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    if (set(name) && env[name]!.trim().toLowerCase() !== 'http/protobuf') {
      warnings.push(`${name}: gotrail exports OTLP over HTTP with protobuf only (http/protobuf), got "${env[name]}": ignored (a gRPC endpoint, port 4317, does not accept it; use the collector's OTLP/HTTP port, 4318)`);
    }
  }
  const timeoutNames = ['OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT'];
  const timeoutOf = (name: string): number => (set(name) ? Number(env[name]!.trim()) : NaN);
  // Beyond what a timer waits, the exporter would take the number and Node
  // warn at each export (`TimeoutOverflowWarning`, outside gotrail's log)
  const timeoutTooLong = (name: string): boolean => timeoutOf(name) > MAX_TIMER_MS;
  const usableTimeout = (name: string): boolean => timeoutOf(name) >= 0 && !timeoutTooLong(name);
  for (const name of timeoutNames) {
    if (timeoutTooLong(name)) warnings.push(`${name}: ${TIMER_TOO_LONG}, got "${env[name]}": ignored (0 is no limit)`);
    else if (set(name) && !usableTimeout(name)) warnings.push(`${name}: expected a number of milliseconds >= 0 (0: no limit), got "${env[name]}": the OTLP exporter ignores it`);
  }
  // The specification's Timeout type: 0 is no limit. The exporter refuses 0
  // (it wants > 0) and would fall back to its 10 s: the variable that decides
  // (the traces one first) saying 0 is passed on as the largest 32-bit count
  // of milliseconds, the stand-in the specification suggests.
  const timeoutFrom = timeoutNames.find(usableTimeout);
  const timeoutNoLimit = timeoutFrom !== undefined && Number(env[timeoutFrom]!.trim()) === 0;
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_COMPRESSION', 'OTEL_EXPORTER_OTLP_COMPRESSION']) {
    const c = env[name]?.trim();
    if (set(name) && c !== 'none' && c !== 'gzip') warnings.push(`${name}: expected none or gzip, got "${env[name]}": the OTLP exporter ignores it`);
  }
  // Headers are parsed as W3C baggage (comma-separated, percent-encoded,
  // `;` starting properties): an entry the exporter drops or cuts short is
  // named by its position and key only, as values are often secrets.
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'OTEL_EXPORTER_OTLP_HEADERS']) {
    if (!set(name)) continue;
    env[name]!.split(',').forEach((entry, i) => {
      if (entry.trim() === '') return;
      const pair = entry.split(';', 1)[0]!;
      const eq = pair.indexOf('=');
      const key = eq > 0 ? pair.slice(0, eq).trim() : '';
      let usable = key !== '' && pair.slice(eq + 1).trim() !== '';
      try {
        if (usable) decodeURIComponent(pair);
      } catch {
        usable = false;
      }
      const which = `entry ${i + 1}${key ? ` (${JSON.stringify(key)})` : ''}`;
      if (!usable) warnings.push(`${name}: ${which} is not key=value (percent-encoded, comma-separated): the OTLP exporter ignores it`);
      else if (entry.includes(';')) warnings.push(`${name}: ${which} has a ";": the OTLP exporter drops what follows it (write it as %3B)`);
    });
  }
  if (flags['otlp-endpoint'] !== undefined) {
    if (!httpUrl(flags['otlp-endpoint'])) throw new RunConfigError(`--otlp-endpoint: expected an http:// or https:// URL, got "${withoutCredentials(flags['otlp-endpoint'])}"`);
    otlp.endpoint = flags['otlp-endpoint'];
    sources['otlp.endpoint'] = '--otlp-endpoint';
  } else {
    // The exporter reads the variables itself (the traces one used as is, the
    // generic one with v1/traces appended, the traces one first), but would
    // take a value that is no http(s) URL (`collector:4318` parses as a URL
    // of scheme "collector:") and fail at every export. Such a value is
    // ignored, as warned above: the next source decides, and is then given
    // to the exporter explicitly, since the exporter would read the bad one.
    const traces = set('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') && httpUrl(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT!.trim());
    const generic = set('OTEL_EXPORTER_OTLP_ENDPOINT') && httpUrl(env.OTEL_EXPORTER_OTLP_ENDPOINT!.trim());
    const badTraces = set('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') && !traces;
    const badAny = badTraces || (set('OTEL_EXPORTER_OTLP_ENDPOINT') && !generic);
    if (traces) {
      sources['otlp.endpoint'] = 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT';
    } else if (generic) {
      sources['otlp.endpoint'] = 'OTEL_EXPORTER_OTLP_ENDPOINT';
      if (badTraces) otlp.endpoint = withTracesPath(env.OTEL_EXPORTER_OTLP_ENDPOINT!.trim());
    } else if (fo?.endpoint !== undefined) {
      otlp.endpoint = fo.endpoint;
      sources['otlp.endpoint'] = FROM_FILE;
    } else {
      sources['otlp.endpoint'] = 'default';
      if (badAny) otlp.endpoint = DEFAULT_OTLP_TRACES_ENDPOINT;
    }
  }
  if (fo?.headers !== undefined && !set('OTEL_EXPORTER_OTLP_TRACES_HEADERS') && !set('OTEL_EXPORTER_OTLP_HEADERS')) otlp.headers = { ...fo.headers };
  // the file's 0 is no limit too, as the variables' is
  // Without a usable variable the file's value decides, else the exporter's
  // default; given explicitly, as the exporter would otherwise read a
  // variable that is set but ignored here (a number too long for a timer).
  if (timeoutFrom === undefined) {
    if (fo?.timeoutMillis !== undefined) otlp.timeoutMillis = fo.timeoutMillis === 0 ? OTLP_TIMEOUT_NO_LIMIT : fo.timeoutMillis;
    else if (timeoutNames.some(timeoutTooLong)) otlp.timeoutMillis = DEFAULT_OTLP_TIMEOUT_MS;
  } else if (timeoutNoLimit) {
    otlp.timeoutMillis = OTLP_TIMEOUT_NO_LIMIT;
  } else if (timeoutNames.some(timeoutTooLong)) {
    otlp.timeoutMillis = timeoutOf(timeoutFrom);
  }

  const sampling = parseSampling(env, file.sampling, sources, warnings);

  const metricsAddress = pick('metricsAddress', 'metrics-address', flags['metrics-address'], file.metricsAddress) ?? '127.0.0.1:9464';
  const adminAccess = pick('adminAccess', 'admin-access', flags['admin-access'], file.adminAccess) ?? 'loopback';
  if (adminAccess !== 'loopback' && adminAccess !== 'any') throw new RunConfigError(`--admin-access: expected loopback or any, got "${adminAccess}"`);
  const logLevel = pick('logLevel', 'log-level', flags['log-level'], file.logLevel) ?? 'info';
  if (!isLogLevel(logLevel) || logLevel === 'silent') throw new RunConfigError(`--log-level: expected debug, info, warn or error, got "${logLevel}"`);

  const timerFlag = (name: 'scan-interval' | 'linger', min: number, unit: string): number | undefined => {
    const raw = flags[name];
    if (raw === undefined) return undefined;
    const r = parseTimerMillis(raw, min, unit);
    if ('problem' in r) throw new RunConfigError(`--${name}: ${r.problem}`);
    return r.ms;
  };
  const scanIntervalMs = pick('scanIntervalMs', 'scan-interval', timerFlag('scan-interval', 50, 'milliseconds'), file.scanIntervalMillis);
  const lingerMs = pick('lingerMs', 'linger', timerFlag('linger', 0, 'milliseconds; 0: detach with the last process'), file.lingerMillis);

  const mapSizes: MapSizes = {
    processes: pick('maps.maxProcesses', 'max-processes', count('max-processes', flags['max-processes'], 16, 'processes', MAX_HASH_MAP_ENTRIES), file.maps?.maxProcesses),
    inflight: pick('maps.maxInflight', 'max-inflight', count('max-inflight', flags['max-inflight'], 16, 'requests', MAX_HASH_MAP_ENTRIES), file.maps?.maxInflight),
    ringBufferBytes: pick('maps.ringBufferBytes', 'ring-buffer-bytes', count('ring-buffer-bytes', flags['ring-buffer-bytes'], 4096, 'bytes', MAX_RING_BUFFER_BYTES, true), file.maps?.ringBufferBytes),
  };
  const maxHttpRoutes = pick('maxHttpRoutes', 'max-http-routes', count('max-http-routes', flags['max-http-routes'], 0, 'routes per service'), file.maxHttpRoutes);
  let dbQueryText: boolean;
  const dbQueryTextEnv = (env.GOTRAIL_DB_QUERY_TEXT ?? '').trim();
  if (flags['db-query-text'] !== true && dbQueryTextEnv !== '') {
    // the words gotrail's other switches take (GOTRAIL_TRACE, the opt-in variable): 1 and 0 too
    const on = /^(true|1)$/i.test(dbQueryTextEnv);
    if (!on && !/^(false|0)$/i.test(dbQueryTextEnv)) throw new RunConfigError(`GOTRAIL_DB_QUERY_TEXT: expected true or false (or 1, 0), got "${env.GOTRAIL_DB_QUERY_TEXT}"`);
    dbQueryText = on;
    sources.dbQueryText = 'GOTRAIL_DB_QUERY_TEXT';
  } else {
    dbQueryText = pick('dbQueryText', 'db-query-text', flags['db-query-text'] === true ? true : undefined, file.dbQueryText) ?? false;
  }
  let budgetFraction: number | undefined;
  const budgetEnv = (env.GOTRAIL_OVERHEAD_BUDGET ?? '').trim();
  try {
    if (flags['overhead-budget'] !== undefined) {
      budgetFraction = parseBudgetPercent(flags['overhead-budget']);
      sources['overheadBudget.percent'] = '--overhead-budget';
    } else if (budgetEnv !== '') {
      budgetFraction = parseBudgetPercent(budgetEnv);
      sources['overheadBudget.percent'] = 'GOTRAIL_OVERHEAD_BUDGET';
    } else {
      // 0 is off, as on the command line
      budgetFraction = file.overheadBudget?.percent ? file.overheadBudget.percent / 100 : undefined;
      sources['overheadBudget.percent'] = file.overheadBudget?.percent !== undefined ? FROM_FILE : 'default';
    }
  } catch (e) {
    throw new RunConfigError(`${flags['overhead-budget'] !== undefined ? '--overhead-budget' : 'GOTRAIL_OVERHEAD_BUDGET'}: ${(e as Error).message}`);
  }
  const budgetWindowMs = pick('overheadBudget.windowMillis', 'overhead-budget-window', count('overhead-budget-window', flags['overhead-budget-window'], 1000, 'milliseconds'), file.overheadBudget?.windowMillis) ?? DEFAULT_BUDGET_WINDOW_MS;
  const overheadBudget = budgetFraction === undefined ? undefined : { fraction: budgetFraction, windowMs: budgetWindowMs };
  const kafkaMessageKey = pick('kafkaMessageKey', 'kafka-message-key', flags['kafka-message-key'] === true ? true : undefined, file.kafkaMessageKey) ?? false;
  const debugProbeHitsPath = pick('debugProbeHitsPath', 'debug-probe-hits', flags['debug-probe-hits'], file.debugProbeHits);
  const propagation: PropagationOptions = {
    inject: pick('propagation.inject', 'no-inject-traceparent', flags['no-inject-traceparent'] ? false : undefined, file.propagation?.inject) ?? true,
    allow: pick('propagation.allow', 'inject-allow', flags['inject-allow'], file.propagation?.allow) ?? [],
    deny: pick('propagation.deny', 'inject-deny', flags['inject-deny'], file.propagation?.deny) ?? [],
    excludeExe: pick('propagation.excludeExe', 'no-inject-exe', flags['no-inject-exe'], file.propagation?.excludeExe) ?? [],
    localLinking: pick('propagation.localLinking', 'no-local-linking', flags['no-local-linking'] ? false : undefined, file.propagation?.localLinking) ?? true,
  };
  for (const g of propagation.excludeExe ?? []) {
    const problem = exeGlobProblem(g);
    if (problem) throw new RunConfigError(`--no-inject-exe: "${g}": ${problem}`);
  }
  for (const [flag, list] of [['inject-allow', propagation.allow], ['inject-deny', propagation.deny]] as const) {
    for (const d of list ?? []) {
      try {
        parseDestination(d);
      } catch (e) {
        throw new RunConfigError(`--${flag}: ${(e as Error).message}`);
      }
    }
  }

  // The specification's Boolean: only "true" (any case) is true; anything
  // else is false, with a warning unless it is "false" or empty.
  const sdkDisabledText = (env.OTEL_SDK_DISABLED ?? '').trim();
  const sdkDisabled = sdkDisabledText.toLowerCase() === 'true';
  if (sdkDisabledText !== '' && !sdkDisabled && sdkDisabledText.toLowerCase() !== 'false') {
    warnings.push(`OTEL_SDK_DISABLED: expected true or false, got "${env.OTEL_SDK_DISABLED}": taken as false (tracing stays on)`);
  }
  if (sdkDisabled) {
    // "a no-op SDK for all telemetry signals": for an agent that has one
    // signal, nothing traced (no probe attached, so the programs pay
    // nothing) and nothing exported, whatever a flag or the file says
    const by = `OTEL_SDK_DISABLED=${sdkDisabledText}`;
    selection.disabledBy = by;
    exportConfig.exporter = 'none';
    exportConfig.sources['exporter'] = 'OTEL_SDK_DISABLED';
    sources['export.exporter'] = 'OTEL_SDK_DISABLED';
    propagation.inject = false;
    sources['propagation.inject'] = 'OTEL_SDK_DISABLED';
    sources['sdkDisabled'] = 'OTEL_SDK_DISABLED';
  }

  return {
    sdkDisabled,
    overheadBudget,
    selection, kubernetes, export: exportConfig, otlp, sampling, metricsAddress, adminAccess,
    scanIntervalMs, lingerMs, mapSizes, maxHttpRoutes, logLevel, dbQueryText, kafkaMessageKey, debugProbeHitsPath, propagation, sources,
    ...(warnings.length ? { warnings } : {}),
  };
}

/** The start-only settings whose value differs between two resolutions (they wait for a restart). */
export function startOnlyChanges(running: RunConfig, next: RunConfig): string[] {
  return START_ONLY.filter((k) => JSON.stringify(running[k]) !== JSON.stringify(next[k]));
}
