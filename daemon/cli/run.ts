/**
 * `gotrail run`: the agent.
 */
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../agent/agent.ts';
import { otherAgents } from '../agent/other-agents.ts';
import { DEFAULT_BPF_OBJECT } from '../agent/bpf-runtime.ts';
import { createMetrics, serveMetrics, type MetricsServer } from '../agent/metrics.ts';
import { createExporter } from '../export/exporters.ts';
import type { ExportConfig } from '../export/config.ts';
import { describeSampler } from '../export/sampler.ts';
import type { LoadedConfig } from '../config/file.ts';
import { resolveRunConfig, RunConfigError, startOnlyChanges, type RunConfig } from '../config/resolve.ts';
import { ConfigReloader } from '../config/reload.ts';
import { createLogger, type Logger } from '../util/log.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { holdEarlySignals, releaseEarlySignals } from './early-signals.ts';
import { MAX_TIMER_SECONDS } from '../util/timers.ts';
import { CAP_BPF, CAP_SYS_ADMIN, effectiveCapabilities } from '../util/capabilities.ts';

export const runHelp = `Usage: gotrail run [options]

Traces every Go process on this host (or those the rules select) and exports
one span per operation. Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE,
CAP_KILL, CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE, CAP_NET_ADMIN for header
injection, and CAP_SYS_NICE for prompt detaching on a busy node) and a kernel
with BTF.

Configuration file:
  --config FILE          read every setting below from a YAML file (see README,
                         deploy/config.example.yaml); a flag wins over its
                         environment variable, which wins over the file, which
                         wins over the default. The file is watched: selection,
                         exporter, batch, sampling and log level changes apply
                         without a restart (also on SIGHUP); an invalid file is
                         rejected with an error and the running settings kept

Selection (repeatable; any exclude wins; a process matching any include is
traced; without includes every Go process is traced):
  --include-exe GLOB     trace executables whose path matches GLOB
  --exclude-exe GLOB     never trace executables whose path matches GLOB
  --include-name GLOB    trace processes whose name (comm) matches GLOB
  --exclude-name GLOB    never trace processes whose name matches GLOB
  --include-cmdline GLOB trace processes whose command line (arguments joined by
                         spaces) matches GLOB; * also matches / and spaces
  --exclude-cmdline GLOB never trace processes whose command line matches GLOB
  --include-container ID trace processes in containers whose id starts with ID
  --exclude-container ID never trace processes in containers whose id starts with ID
  --include-namespace GLOB  trace processes of pods in matching Kubernetes namespaces
  --exclude-namespace GLOB  never trace processes of pods in matching namespaces
  --include-pod-label K=V   trace processes of pods with label K matching glob V
                            (K alone: pods that have label K)
  --exclude-pod-label K=V   never trace processes of pods with such a label
  --opt-in-env NAME      trace only processes started with NAME=true (or 1)
A process started with GOTRAIL_TRACE=false (or 0) is never traced. gotrail's
own tools (executables under its install directory) are traced only when an
include rule selects them. Telemetry back-ends (OpenTelemetry Collector,
Jaeger, Tempo, Grafana Alloy and Agent, Loki, Mimir, Prometheus, Thanos,
VictoriaMetrics, …: see README) are excluded by default: an --include-exe,
--include-name or --include-cmdline rule matching one traces it;
  --no-default-excludes  trace telemetry back-ends like any Go process

Kubernetes:
  --kubernetes MODE      auto (default): in a cluster, watch this node's pods for
                         k8s.* resource attributes and the namespace/label rules
                         (node from K8S_NODE_NAME, else the hostname); off: never

Export (a flag wins over its environment variable, which wins over the default;
a variable's unusable value is ignored with a warning, a flag's is an error):
  --exporter KIND        otlp (default), console (trace trees on stdout) or none;
                         env OTEL_TRACES_EXPORTER
  --otlp-endpoint URL    OTLP/HTTP traces URL; default from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
                         or OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318/v1/traces
  --max-queue-size N     spans held for export (waiting or being sent) before new ones
                         are dropped, counted in gotrail_spans_dropped_total{reason="queue_full"}
                         (default 65536); env OTEL_BSP_MAX_QUEUE_SIZE
  --max-export-batch-size N  spans per export; a full batch is sent at once (default 2048,
                         at most the queue size: larger values are clamped with a
                         warning); env OTEL_BSP_MAX_EXPORT_BATCH_SIZE
  --schedule-delay MS    longest wait before a partial batch is sent (default 1000);
                         env OTEL_BSP_SCHEDULE_DELAY
  --export-timeout MS    an export taking longer counts as failed and is retried
                         (default 30000; 0: no limit); env OTEL_BSP_EXPORT_TIMEOUT;
                         on stop, what is not exported within it (30 s when 0) is
                         dropped, logged and counted
  --max-concurrent-exports N  exports in flight at once (default 2)
  While exports fail, spans stay queued and are retried with backoff (up to 30 s).
Sampling (no flag; decided by the probes at each trace's root span):
  OTEL_TRACES_SAMPLER always_on, always_off, traceidratio, parentbased_always_on
  (default), parentbased_always_off or parentbased_traceidratio; the ratio
  samplers take OTEL_TRACES_SAMPLER_ARG (0 to 1, default 1). A bad value is
  ignored with a warning
  OTEL_SDK_DISABLED=true traces no process and exports nothing; the agent runs
  on, serving its metrics, health and status

Agent:
  --metrics-address A    serve /metrics, /healthz (alive), /readyz (probes loaded,
                         first scan done, exporter healthy) and /status (what is
                         traced, and why not; the configuration) on host:port (default 127.0.0.1:9464;
                         "off" disables; metrics name the programs on this node, so
                         bind wider only on purpose); bound first: an address in
                         use stops the start
  --admin-access W       who may read /status and POST /calibrate on the metrics
                         address: loopback (default: peers on 127.0.0.0/8 or ::1, i.e.
                         this host, or kubectl port-forward to the pod) or any (every
                         peer that reaches it); other peers get 403. /metrics, /healthz
                         and /readyz answer every peer
  --scan-interval MS     /proc reconciliation interval, behind exec/exit events (default 5000)
  --linger MS            keep a binary's probes this long after its last process exits, so
                         restarted and short-lived programs are traced from their first
                         instruction (default 30000; 0: detach with the last process)
  --max-processes N      BPF allow-list capacity: Go processes traced at once
                         (default 16384; 16 to 134217728, a BPF hash map's limit)
  --max-inflight N       in-flight requests tracked per probe, node-wide
                         (default 16384; 16 to 134217728)
  --max-http-routes N    distinct http.route values reported per service; routes beyond
                         are left out of spans and counted in gotrail_http_routes_cut_total
                         (default 1000)
  --ring-buffer-bytes N  event ring buffer size in bytes, a power of two from 4096
                         to 2147483648 (default 2097152)
  --db-query-text        database spans carry db.query.text, with every literal replaced
                         by ? (default off: no query text leaves the node);
                         env GOTRAIL_DB_QUERY_TEXT=true (or 1)
  --overhead-budget P    keep tracing's estimated cost under P% of each binary's
                         processes' own CPU time (e.g. 2%): over it, probes of that
                         binary are detached, enrichment first, server spans last, and
                         attached again once well under it (default off; 0 or off:
                         no budget; at most 100%: the cost is counted in that CPU
                         time); env GOTRAIL_OVERHEAD_BUDGET
  --overhead-budget-window MS  moving window the budget is judged over (default 10000)
  --no-inject-traceparent  do not add a W3C traceparent header to outgoing HTTP/1.x
                         requests of traced processes (default: added, at socket
                         level, no user memory written; see docs/cross-node-propagation.md)
  --inject-allow DEST    only destinations matching a DEST get the header: a CIDR,
                         host name, *.domain or * (repeatable; default: all)
  --inject-deny DEST     destinations that never get the header (repeatable)
  --no-inject-exe GLOB   traced executables whose requests never get the header
  --no-local-linking     do not link client and server spans of this node by their
                         connection: only a received traceparent links
  --kafka-message-key    Kafka spans carry the message's key (messaging.kafka.message.key;
                         default off: a key is the program's data)
  --log-level LEVEL      debug, info (default), warn, error
  --debug-probe-hits FILE  debugging aid: write every probe hit (program, process,
                         goroutine, link set, time, CPU) and the agent's attach and
                         allow-list steps to FILE as JSON lines; slows every
                         traced request; lines that cannot be written (a full
                         disk) are logged once and counted, tracing goes on
                         (default: off)
  --debug-link-per-program  measuring aid: attach one uprobe_multi link per (binary,
                         probe program) instead of one per binary, so that the
                         kernel's statistics give each program's run time
                         (gotrail_probe_run_seconds_total{program}); detaching
                         then waits for more kernel grace periods (default: off)
  --duration S           stop after S seconds (default: run until SIGINT/SIGTERM)
  -h, --help             this help

Exit codes: 0 stopped cleanly; 1 failed; 2 usage; 3 environment (privileges,
BTF, probes not built).
`;

export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new CliError(`--metrics-address: expected host:port (a port up to 65535) or off, got "${s}"`, EXIT.USAGE);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function checkEnvironment(): void {
  // Without CAP_BPF (or CAP_SYS_ADMIN, which implies it) nothing loads: say so in one line
  // rather than through libbpf's messages about a trivial program it could not load.
  const caps = effectiveCapabilities();
  if (caps !== undefined && !((caps >> CAP_BPF) & 1n) && !((caps >> CAP_SYS_ADMIN) & 1n)) {
    throw new CliError('needs root (e.g. sudo), or the capabilities CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_KILL, CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE, CAP_NET_ADMIN and CAP_SYS_NICE: this process has neither CAP_BPF nor CAP_SYS_ADMIN', EXIT.ENVIRONMENT);
  }
  if (!existsSync('/sys/kernel/btf/vmlinux')) throw new CliError('this kernel has no BTF (/sys/kernel/btf/vmlinux): gotrail needs CONFIG_DEBUG_INFO_BTF', EXIT.ENVIRONMENT);
  if (!existsSync(DEFAULT_BPF_OBJECT)) throw new CliError(`probes not built (${DEFAULT_BPF_OBJECT}): run bash deploy/setup.sh`, EXIT.ENVIRONMENT);
}

/** Batch settings as the batcher takes them: the batch size clamped to the queue size, with a warning. */
function clampBatch(cfg: RunConfig, log: Logger): ExportConfig['batcher'] {
  const bsp = { ...cfg.export.batcher };
  if (bsp.maxExportBatchSize > bsp.maxQueueSize) {
    // the specification requires batch size <= queue size; its SDKs clamp and warn
    log.warn('the export batch size exceeds the queue size: using the queue size', {
      maxExportBatchSize: bsp.maxExportBatchSize, from: cfg.export.sources['maxExportBatchSize'],
      maxQueueSize: bsp.maxQueueSize, queueSizeFrom: cfg.export.sources['maxQueueSize'],
    });
    bsp.maxExportBatchSize = bsp.maxQueueSize;
  }
  return bsp;
}

function exporterOf(cfg: RunConfig): SpanExporter {
  return createExporter({ kind: cfg.export.exporter, endpoint: cfg.otlp.endpoint, headers: cfg.otlp.headers, timeoutMillis: cfg.otlp.timeoutMillis });
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * `parseArgs` refuses `--flag -1` as ambiguous (the value could be another
 * flag) with a message that says nothing of what the flag accepts: a
 * negative number after a flag is joined to it (`--flag=-1`), so that the
 * flag's own check names what it accepts (a flag that takes no value says so).
 */
export function joinNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (/^--[a-z]/.test(a) && !a.includes('=') && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/**
 * Binds the metrics address before anything else starts, so that an address
 * in use stops the start at once, before the probes load.
 * @throws CliError naming the address and how to change it.
 */
async function reserveMetricsAddress(addr: { host: string; port: number }, text: string, source: string | undefined): Promise<Server> {
  // loaded on use, as the metrics module does (an ES import of node:http loads more of Node)
  const server = process.getBuiltinModule('node:http').createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'EADDRINUSE' ? 'the address is already in use (another gotrail?)' : err.code === 'EADDRNOTAVAIL' ? 'no interface of this host has that address' : err.message;
    const how = source === 'config file' ? 'metricsAddress in the configuration file' : '--metrics-address';
    throw new CliError(`cannot serve metrics on ${text}: ${why}; choose another with ${how} (host:port, or off)`, EXIT.FAILED);
  }
  // a start that fails before the server is handed over must not be kept alive by it
  server.unref();
  return server;
}

export async function runAgent(argv: string[], out: (s: string) => void): Promise<number> {
  // a SIGHUP (a reload asked too early) must not kill the agent while it
  // starts: counted here unless the launcher's preload already counts them
  holdEarlySignals();
  const { values } = parseArgs({
    args: joinNegativeValues(argv),
    options: {
      config: { type: 'string' },
      'include-exe': { type: 'string', multiple: true },
      'exclude-exe': { type: 'string', multiple: true },
      'include-name': { type: 'string', multiple: true },
      'exclude-name': { type: 'string', multiple: true },
      'include-cmdline': { type: 'string', multiple: true },
      'exclude-cmdline': { type: 'string', multiple: true },
      'include-container': { type: 'string', multiple: true },
      'exclude-container': { type: 'string', multiple: true },
      'include-namespace': { type: 'string', multiple: true },
      'exclude-namespace': { type: 'string', multiple: true },
      'include-pod-label': { type: 'string', multiple: true },
      'exclude-pod-label': { type: 'string', multiple: true },
      'opt-in-env': { type: 'string' },
      'no-inject-traceparent': { type: 'boolean' },
      'inject-allow': { type: 'string', multiple: true },
      'inject-deny': { type: 'string', multiple: true },
      'no-inject-exe': { type: 'string', multiple: true },
      'no-local-linking': { type: 'boolean' },
      'no-default-excludes': { type: 'boolean' },
      kubernetes: { type: 'string' },
      exporter: { type: 'string' },
      'max-queue-size': { type: 'string' },
      'max-export-batch-size': { type: 'string' },
      'schedule-delay': { type: 'string' },
      'export-timeout': { type: 'string' },
      'max-concurrent-exports': { type: 'string' },
      'otlp-endpoint': { type: 'string' },
      'metrics-address': { type: 'string' },
      'admin-access': { type: 'string' },
      'scan-interval': { type: 'string' },
      linger: { type: 'string' },
      'max-processes': { type: 'string' },
      'max-inflight': { type: 'string' },
      'max-http-routes': { type: 'string' },
      'ring-buffer-bytes': { type: 'string' },
      'log-level': { type: 'string' },
      'debug-probe-hits': { type: 'string' },
      'db-query-text': { type: 'boolean' },
      'overhead-budget': { type: 'string' },
      'overhead-budget-window': { type: 'string' },
      'kafka-message-key': { type: 'boolean' },
      duration: { type: 'string' },
      'debug-link-per-program': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    out(runHelp);
    return EXIT.OK;
  }
  const { config: configPath, duration: durationText, help: _help, 'debug-link-per-program': linkPerProgram, ...flags } = values;
  let file: LoadedConfig | undefined;
  let cfg: RunConfig;
  // the parser and schema library load only when a file is given
  const configFile = configPath !== undefined ? await import('../config/file.ts') : undefined;
  try {
    if (configFile && configPath !== undefined) file = configFile.loadConfigFile(configPath);
    cfg = resolveRunConfig(flags, process.env, file?.config);
  } catch (e) {
    if ((configFile && e instanceof configFile.ConfigFileError) || e instanceof RunConfigError) throw new CliError(e.message, EXIT.USAGE);
    throw e;
  }
  const duration = durationText !== undefined && durationText.trim() !== '' ? Number(durationText) : undefined;
  // the stop is a timer, which waits at most 2^31 - 1 ms (beyond, Node fires it after 1 ms)
  const maxDuration = MAX_TIMER_SECONDS;
  if (durationText !== undefined && !(duration !== undefined && Number.isFinite(duration) && duration > 0 && duration <= maxDuration)) {
    throw new CliError(`--duration: expected a number of seconds > 0${duration !== undefined && duration > maxDuration ? ` and at most ${maxDuration} (about 24.8 days: the longest a timer waits; leave it out to run until SIGINT/SIGTERM)` : ' (leave it out to run until SIGINT/SIGTERM)'}, got "${durationText}"`, EXIT.USAGE);
  }
  const metricsAddr = cfg.metricsAddress === 'off' ? undefined : parseHostPort(cfg.metricsAddress);
  checkEnvironment();
  const metricsListener = metricsAddr ? await reserveMetricsAddress(metricsAddr, cfg.metricsAddress, cfg.sources['metricsAddress']) : undefined;

  const log = createLogger(cfg.logLevel);
  // Signals are taken from here on: one arriving during start-up stops the
  // agent once it has started, instead of killing it half-way (Node's
  // default action when no listener is registered yet). A second one while the agent stops (an impatient Ctrl-C, a supervisor
  // asking again) gives up the final export at once, the spans it drops
  // logged and counted, where Node's default action would have ended the
  // process with them lost without a word.
  let requestStop = (): void => {};
  const stopRequested = new Promise<void>((resolve) => (requestStop = resolve));
  let stopSignals = 0;
  let giveUpExport = (): void => {};
  const onStopSignal = (signal: NodeJS.Signals): void => {
    if (stopSignals++ === 0) {
      requestStop();
      return;
    }
    log.warn(`${signal} received while stopping: giving up the export now`);
    giveUpExport();
  };
  process.on('SIGINT', onStopSignal);
  process.on('SIGTERM', onStopSignal);
  for (const w of cfg.warnings ?? []) log.warn(w);
  if (cfg.sdkDisabled) {
    log.warn('tracing is disabled by OTEL_SDK_DISABLED=true: no process is traced (no probe attached) and no span exported; metrics, /healthz, /readyz and /status are still served; unset the variable to trace');
  }
  const bsp = clampBatch(cfg, log);
  const exporter = exporterOf(cfg);
  const agent = new Agent(log, {
    exporter,
    batcher: bsp,
    selection: cfg.selection,
    sampling: cfg.sampling,
    kubernetes: cfg.kubernetes === 'off' ? false : undefined,
    scanIntervalMs: cfg.scanIntervalMs,
    lingerMs: cfg.lingerMs,
    mapSizes: cfg.mapSizes,
    maxHttpRoutes: cfg.maxHttpRoutes,
    dbQueryText: cfg.dbQueryText,
    overheadBudget: cfg.overheadBudget,
    kafkaMessageKey: cfg.kafkaMessageKey,
    debugProbeHitsPath: cfg.debugProbeHitsPath,
    propagation: cfg.propagation,
    ...(linkPerProgram ? { linkPerBinary: false } : {}),
  });
  giveUpExport = () => agent.giveUpExport('a second stop signal');
  const others = otherAgents();
  if (others.length) log.warn('another gotrail agent runs on this node: a process both select is traced twice (two traces per request, each probe hit taken twice)', { pids: others.join(',') });
  try {
    await agent.start();
  } catch (e) {
    // What did start (the ring buffer's poll thread, timers, links, the
    // reserved metrics port) would keep the process alive with its error
    // printed, its SIGTERM handler waiting for a stop nobody awaits
    await agent.stop().catch((stopError: Error) => log.debug('stopping after a failed start failed too', { error: stopError.message }));
    metricsListener?.close();
    const err = e as Error & { code?: string };
    if (err.code === 'EPERM' || err.code === 'EACCES') throw new CliError(`${err.message}\ngotrail needs root or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE`, EXIT.ENVIRONMENT);
    throw new CliError(`starting the agent failed: ${err.message}${mapSizeHint(err.message, cfg)}`, EXIT.FAILED);
  }

  // Reload: the file read again, resolved under the same flags and
  // environment; what changed is applied to the running agent.
  const started = cfg;
  let running = cfg;
  const reloader = new ConfigReloader(log, file && configFile ? { loaded: file, load: configFile.loadConfigFile } : undefined, cfg.sources, (loaded) => {
    const next = resolveRunConfig(flags, process.env, loaded.config);
    // everything that may throw before anything is applied: a reload applies whole or not at all
    const exporter = same([next.export, next.otlp], [running.export, running.otlp]) ? undefined : exporterOf(next);
    if (!same(next.selection, running.selection)) agent.setSelection(next.selection);
    if (exporter) agent.setExporter(exporter, clampBatch(next, log));
    if (!same(next.sampling, running.sampling)) agent.setSampling(next.sampling);
    if (next.logLevel !== running.logLevel) log.level = next.logLevel;
    if (next.dbQueryText !== running.dbQueryText) agent.setDbQueryText(next.dbQueryText);
    if (!same(next.overheadBudget, running.overheadBudget)) agent.setOverheadBudget(next.overheadBudget);
    if (next.kafkaMessageKey !== running.kafkaMessageKey) agent.setKafkaMessageKey(next.kafkaMessageKey);
    running = next;
    reloader.setSources(next.sources);
    return { pendingRestart: startOnlyChanges(started, next) };
  });
  let metrics: MetricsServer | undefined;
  if (metricsAddr) {
    try {
      const reg = createMetrics(agent);
      reloader.registerMetrics(reg);
      metrics = await serveMetrics(reg, metricsAddr.host, metricsAddr.port, () => agent.healthy(), () => ({ config: reloader.status(), ...(agent.status() as object) }), () => agent.ready(), { calibrate: () => agent.calibrate(), access: cfg.adminAccess }, metricsListener);
      log.info('metrics served', { url: `http://${metricsAddr.host.includes(':') ? `[${metricsAddr.host}]` : metricsAddr.host}:${metrics.port}/metrics`, status: cfg.adminAccess === 'any' ? 'every peer' : 'loopback peers only' });
    } catch (e) {
      await agent.stop();
      throw new CliError(`cannot serve metrics on ${cfg.metricsAddress}: ${(e as Error).message}`, EXIT.FAILED);
    }
  }
  const earlyHups = await releaseEarlySignals(() => reloader.start());
  await reloader.ready();
  if (earlyHups) {
    // asked while starting: done now, which also takes a change made meanwhile
    log.info('SIGHUP received while starting: reloading the configuration now', { signals: earlyHups });
    reloader.reload('SIGHUP');
  } else if (file) {
    // a change made while the agent was starting, before the watcher was there
    reloader.reload('start');
  }
  // where the spans go (credentials left out), so that a wrong endpoint shows at once
  const destination = (exporter as { destination?: string }).destination;
  log.info('gotrail running', {
    exporter: cfg.export.exporter, ...(destination ? { endpoint: destination } : {}), pid: process.pid,
    maxQueueSize: bsp.maxQueueSize, maxExportBatchSize: bsp.maxExportBatchSize, scheduledDelayMillis: bsp.scheduledDelayMillis,
    exportTimeoutMillis: bsp.exportTimeoutMillis, maxConcurrentExports: bsp.maxConcurrentExports,
    sampler: describeSampler(cfg.sampling),
    ...(cfg.sdkDisabled ? { tracing: 'disabled (OTEL_SDK_DISABLED)' } : {}),
    ...(file ? { config: file.path } : {}),
  });
  if (duration) setTimeout(requestStop, duration * 1000).unref();
  await stopRequested;
  log.info('stopping');
  await reloader.close();
  // spans still queued are being exported: a SIGHUP now must not end that (Node's default action)
  process.on('SIGHUP', () => log.info('SIGHUP received while stopping: ignored'));
  await metrics?.close();
  await agent.stop();
  return EXIT.OK;
}

/**
 * The map sizes set away from their defaults, named by where they were set,
 * when a start failed as maps too large for the kernel fail: the error names
 * the object or an internal map (`resize map gt_goroutine_spans: Invalid
 * argument`, `Cannot allocate memory`, `Argument list too long`), never the
 * setting to change. Empty otherwise.
 */
function mapSizeHint(message: string, cfg: RunConfig): string {
  if (!/resize map|Cannot allocate memory|Argument list too long/.test(message)) return '';
  const sizes: Array<[string, number | undefined]> = [
    ['maps.maxProcesses', cfg.mapSizes.processes], ['maps.maxInflight', cfg.mapSizes.inflight], ['maps.ringBufferBytes', cfg.mapSizes.ringBufferBytes],
  ];
  const set = sizes.flatMap(([key, v]) => {
    const from = cfg.sources[key];
    if (v === undefined || from === undefined || from === 'default') return [];
    // a flag by its name, the file's key with the file named
    return [from.startsWith('--') ? `${from} ${v}` : `${key}: ${v} (${from})`];
  });
  return set.length ? `\nthe BPF maps are sized by ${set.join(', ')}: the maps could not be made at that size: try smaller values` : '';
}
