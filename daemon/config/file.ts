/**
 * The configuration file of `gotrail run --config FILE`: one YAML document
 * covering every option of `gotrail run`, parsed with the `yaml` library and
 * validated with a `zod` schema. Unknown keys are refused (a misspelt key
 * would otherwise be ignored silently), and every error names the key's path
 * and what was expected, e.g.
 * `config.yaml: exporter.batch.maxQueueSize: expected an integer >= 1, got 0`.
 *
 * Every key is optional; an absent key leaves the setting to its environment
 * variable or default. Keys are those of the command-line flags in camelCase,
 * grouped by subject; durations are milliseconds (`…Millis`).
 *
 * Loaded only with `--config` (the YAML parser and the schema library take
 * about 30 MiB of memory, which an agent configured by flags does not pay).
 */
import { readConfigBytes } from './read.ts';
import { createHash } from 'node:crypto';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { countRange, isPowerOfTwo, MAX_HASH_MAP_ENTRIES, MAX_RING_BUFFER_BYTES, SAMPLERS } from './resolve.ts';
import { MAX_TIMER_MS, TIMER_TOO_LONG } from '../util/timers.ts';
import { withoutCredentials } from '../util/url-credentials.ts';
import { BUDGET_OVER_100 } from '../agent/budget.ts';

const glob = z.string().min(1, 'expected a non-empty glob');
const globs = z.array(glob);
const intAtLeast = (min: number, unit: string) =>
  z.number({ error: (i) => `expected an integer >= ${min} (${unit}), got ${describe(i.input)}` })
    .int({ error: (i) => `expected an integer >= ${min} (${unit}), got ${describe(i.input)}` })
    .min(min, { error: (i) => `expected an integer >= ${min} (${unit}), got ${describe(i.input)}` });
/** A duration that becomes a timer: at most 2^31 - 1 ms, beyond which Node fires it after 1 ms. */
const timerMillis = (min: number, unit: string) =>
  intAtLeast(min, unit).max(MAX_TIMER_MS, { error: (i) => `${TIMER_TOO_LONG}, got ${describe(i.input)}` });
/** An integer from min to max, refused with the range and unit as the flag refuses it. */
const intRange = (min: number, max: number, unit: string, pow2 = false) => {
  const error = (i: { input?: unknown }): string => `expected ${countRange(min, unit, max, pow2)}, got ${describe(i.input)}`;
  // one check, so that one bad value is one problem (zod runs a refinement after a failed bound)
  return z.number({ error }).refine((n) => Number.isInteger(n) && n >= min && n <= max && (!pow2 || isPowerOfTwo(n)), { error });
};

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return typeof v;
}

/** What a value is, never the value itself: for settings that may hold credentials (OTLP headers). */
function kindOf(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `a ${typeof v}`;
}

/** OTLP headers carry credentials (authorization, API keys): problems under them name keys and types only. */
const HEADERS_PATH = ['exporter', 'otlp', 'headers'];
const underHeaders = (path: readonly PropertyKey[]): boolean => HEADERS_PATH.every((k, i) => path[i] === k);

const oneOf = <T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: (i) => `expected one of ${values.join(', ')}, got ${describe(i.input)}` });

/** `host:port` or `off`, checked as the flag is. */
const metricsAddress = z.string().refine((s) => {
  if (s === 'off') return true;
  const m = /^(?:\[[^\]]+\]|[^:]*):(\d+)$/.exec(s) ?? /^(\d+)$/.exec(s);
  return !!m && Number(m[1]) <= 65535;
}, {
  error: (i) => `expected host:port (a port up to 65535) or off, got ${describe(i.input)}`,
});


export const configFileSchema = z.strictObject({
  /** Which processes are traced (the --include-* and --exclude-* flags). Hot-reloaded. */
  selection: z.strictObject({
    includeExe: globs, excludeExe: globs,
    includeName: globs, excludeName: globs,
    includeCmdline: globs, excludeCmdline: globs,
    includeContainer: globs, excludeContainer: globs,
    includeNamespace: globs, excludeNamespace: globs,
    includePodLabel: globs, excludePodLabel: globs,
    optInEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'),
    /** false: trace telemetry back-ends like any Go process (--no-default-excludes) */
    defaultExcludes: z.boolean(),
  }).partial(),
  /** auto or off (--kubernetes). Read at start. */
  kubernetes: oneOf(['auto', 'off']),
  /** Where spans go. Hot-reloaded. */
  exporter: z.strictObject({
    /** otlp, console or none (--exporter, OTEL_TRACES_EXPORTER) */
    kind: oneOf(['otlp', 'console', 'none']),
    otlp: z.strictObject({
      /** traces URL (--otlp-endpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT) */
      endpoint: z.url({ protocol: /^https?$/, error: (i) => `expected an http:// or https:// URL, got ${typeof i.input === 'string' ? describe(withoutCredentials(i.input)) : describe(i.input)}` }),
      /** extra request headers (OTEL_EXPORTER_OTLP_HEADERS) */
      headers: z.record(z.string(), z.string({ error: (i) => `expected a string header value (quote it), got ${kindOf(i.input)}` }), {
        error: (i) => `expected a mapping of header names to values, got ${kindOf(i.input)}`,
      }),
      /** ms a request to the collector may take, 0: no limit (OTEL_EXPORTER_OTLP_TIMEOUT, whose 0 means the same) */
      timeoutMillis: timerMillis(0, 'milliseconds (0: no limit)'),
    }).partial(),
    /** the batch span processor (--max-queue-size …, OTEL_BSP_*) */
    batch: z.strictObject({
      maxQueueSize: intAtLeast(1, 'spans'),
      maxExportBatchSize: intAtLeast(1, 'spans'),
      scheduleDelayMillis: timerMillis(0, 'milliseconds'),
      exportTimeoutMillis: timerMillis(0, 'milliseconds (0: no limit)'),
      maxConcurrentExports: intAtLeast(1, 'exports'),
    }).partial(),
  }).partial(),
  /** Which traces are kept (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG). Hot-reloaded. */
  sampling: z.strictObject({
    sampler: oneOf(SAMPLERS),
    /** traceidratio, parentbased_traceidratio: the fraction of traces kept, 0 to 1 */
    ratio: z.number({ error: (i) => `expected a number from 0 to 1, got ${describe(i.input)}` })
      .min(0, { error: (i) => `expected a number from 0 to 1, got ${describe(i.input)}` })
      .max(1, { error: (i) => `expected a number from 0 to 1, got ${describe(i.input)}` }),
  }).partial(),
  /** /metrics, /healthz, /readyz and /status: host:port or off (--metrics-address). Read at start. */
  metricsAddress,
  /** who may use /status and POST /calibrate: loopback (default) or any peer (--admin-access). Read at start. */
  adminAccess: oneOf(['loopback', 'any']),
  /** /proc reconciliation interval (--scan-interval). Read at start. */
  scanIntervalMillis: timerMillis(50, 'milliseconds'),
  /** keep a binary's probes this long after its last process exits (--linger). Read at start. */
  lingerMillis: timerMillis(0, 'milliseconds'),
  /** BPF map sizes (--max-processes, --max-inflight, --ring-buffer-bytes). Read at start. */
  maps: z.strictObject({
    maxProcesses: intRange(16, MAX_HASH_MAP_ENTRIES, 'processes'),
    maxInflight: intRange(16, MAX_HASH_MAP_ENTRIES, 'requests'),
    ringBufferBytes: intRange(4096, MAX_RING_BUFFER_BYTES, 'bytes', true),
  }).partial(),
  /** distinct http.route values reported per service; past it a route is left off and counted (--max-http-routes). Read at start. */
  maxHttpRoutes: intAtLeast(0, 'routes'),
  /** sanitised SQL text (every literal replaced by ?) in db.query.text (--db-query-text); default false. Hot-reloaded. */
  dbQueryText: z.boolean({ error: (i) => `expected true or false, got ${describe(i.input)}` }),
  /** the overhead budget (--overhead-budget, GOTRAIL_OVERHEAD_BUDGET; --overhead-budget-window); default off. Hot-reloaded. */
  overheadBudget: z.strictObject({
    /** percent of the traced processes' own CPU time tracing may cost, at most 100; 0: off (as `--overhead-budget 0`) */
    percent: z.number({ error: (i) => `expected a percentage from 0 (off) to 100, got ${describe(i.input)}` })
      .min(0, { error: (i) => `expected a percentage from 0 (off) to 100, got ${describe(i.input)}` })
      .max(100, { error: (i) => `expected a percentage from 0 (off) to 100, got ${describe(i.input)}: ${BUDGET_OVER_100}` }),
    /** the moving window the estimate is judged over, ms (default 10000) */
    windowMillis: intAtLeast(1000, 'milliseconds'),
  }).partial(),
  /** the message key in messaging.kafka.message.key on Kafka spans (--kafka-message-key); default false. Hot-reloaded. */
  kafkaMessageKey: z.boolean({ error: (i) => `expected true or false, got ${describe(i.input)}` }),
  /** debug, info, warn or error (--log-level). Hot-reloaded. */
  logLevel: oneOf(['debug', 'info', 'warn', 'error']),
  /** traceparent injection into outgoing HTTP/1.x requests, and node-local linking. Read at start. */
  propagation: z.strictObject({
    /** false: no header is added (--no-inject-traceparent); default true */
    inject: z.boolean({ error: (i) => `expected true or false, got ${describe(i.input)}` }),
    /** only these destinations get the header: CIDRs, host names, *.domain, * (--inject-allow) */
    allow: z.array(z.string().min(1, 'expected a CIDR, host name, *.domain or *')),
    /** destinations that never get the header (--inject-deny) */
    deny: z.array(z.string().min(1, 'expected a CIDR, host name, *.domain or *')),
    /** executables traced whose requests get no header (--no-inject-exe) */
    excludeExe: globs,
    /** false: client and server spans of this node are not linked by connection (--no-local-linking) */
    localLinking: z.boolean({ error: (i) => `expected true or false, got ${describe(i.input)}` }),
  }).partial(),
  /** debugging aid (--debug-probe-hits). Read at start. */
  debugProbeHits: z.string().min(1),
}).partial();

/** A validated configuration file's content. */
export type ConfigFile = z.infer<typeof configFileSchema>;

/** A configuration file that cannot be used: `problems` name each bad key's path and what was expected. */
export class ConfigFileError extends Error {
  readonly problems: string[];
  constructor(file: string, problems: string[]) {
    super(problems.map((p) => `${file}: ${p}`).join('\n'));
    this.name = 'ConfigFileError';
    this.problems = problems;
  }
}

/** `selection.includeExe[2]` from zod's path. */
function pathText(path: readonly PropertyKey[]): string {
  let s = '';
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : `${s ? '.' : ''}${String(k)}`;
  return s || '(top level)';
}

/**
 * Validates a configuration already parsed from YAML.
 * @returns the problems (each `path: what was expected, got what`), none when valid.
 */
export function checkConfig(value: unknown): { config?: ConfigFile; problems: string[] } {
  if (value === null || value === undefined) return { config: {}, problems: [] }; // an empty file
  const r = configFileSchema.safeParse(value, { reportInput: true });
  if (r.success) return { config: r.data, problems: [] };
  const problems = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys') {
      return i.keys.map((k) => `${pathText([...i.path, k])}: unknown key (expected one of ${knownKeys(i.path).join(', ')})`).join('\n');
    }
    if (underHeaders(i.path)) return `${pathText(i.path)}: ${i.message}`;
    if (i.code === 'invalid_type' && i.expected === 'object') return `${pathText(i.path)}: expected a mapping, got ${describe(i.input)}`;
    if (i.code === 'invalid_type' && i.expected === 'array') return `${pathText(i.path)}: expected a list, got ${describe(i.input)}`;
    if (i.code === 'invalid_type' && (i.expected === 'string' || i.expected === 'boolean')) return `${pathText(i.path)}: expected a ${i.expected}, got ${describe(i.input)}`;
    return `${pathText(i.path)}: ${i.message}`;
  });
  return { problems: problems.flatMap((p) => p.split('\n')) };
}

/** The keys a mapping at `path` of the schema accepts. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  let s: z.ZodType = configFileSchema;
  for (const k of path) {
    const def = unwrap(s);
    if (!(def instanceof z.ZodObject)) return [];
    const next = (def.shape as Record<string, z.ZodType>)[String(k)];
    if (!next) return [];
    s = next;
  }
  const def = unwrap(s);
  return def instanceof z.ZodObject ? Object.keys(def.shape) : [];
}

function unwrap(s: z.ZodType): z.ZodType {
  return s instanceof z.ZodOptional ? unwrap(s.unwrap() as z.ZodType) : s;
}

/** A loaded configuration file: its content and a digest to tell a real change from a touch. */
export interface LoadedConfig {
  path: string;
  config: ConfigFile;
  /** sha256 of the file's bytes */
  digest: string;
}

/**
 * Parses YAML text and validates it.
 * @throws ConfigFileError with every YAML syntax error (with line and column) or schema problem.
 */
export function parseConfig(text: string, file: string): ConfigFile {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) throw new ConfigFileError(file, doc.errors.map((e) => `YAML: ${e.message.split('\n')[0]!.replace(/:$/, '')}`));
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    // what only shows when the tree is built: an alias to no anchor, or aliases expanding past the parser's bound
    throw new ConfigFileError(file, [`YAML: ${(e as Error).message.split('\n')[0]}`]);
  }
  const { config, problems } = checkConfig(value);
  if (!config) throw new ConfigFileError(file, problems);
  return config;
}

/**
 * Reads and validates the configuration file (following symbolic links, so
 * that a mounted ConfigMap's `..data` swap is read whole).
 * @throws ConfigFileError when it cannot be read, parsed or validated.
 */
export function loadConfigFile(path: string): LoadedConfig {
  let bytes: Buffer;
  try {
    bytes = readConfigBytes(path);
  } catch (e) {
    throw new ConfigFileError(path, [`cannot read: ${(e as Error).message}`]);
  }
  const config = parseConfig(bytes.toString('utf8'), path);
  return { path, config, digest: createHash('sha256').update(bytes).digest('hex') };
}
