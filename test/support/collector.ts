// A real OpenTelemetry Collector for end-to-end tests: started on free
// loopback ports with an OTLP receiver (HTTP and gRPC) and the file exporter,
// so a test asserts on exactly what arrived over the wire, not on what the
// agent believes it sent. The binary is built by set-up (test/collector/).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';

export const defaultCollectorBinary = fileURLToPath(new URL('../../build/collector/otelcol', import.meta.url));

export type SpanKindName = 'UNSPECIFIED' | 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';
export type StatusCodeName = 'UNSET' | 'OK' | 'ERROR';

/**
 * An OTLP AnyValue as JavaScript: ints are numbers while they are safe
 * integers and bigints beyond; bytes are Uint8Array; an empty AnyValue is null.
 * Ints and doubles both become numbers: use `raw` where the distinction matters.
 */
export type AttributeValue =
  | string
  | number
  | bigint
  | boolean
  | Uint8Array
  | null
  | AttributeValue[]
  | { [key: string]: AttributeValue };

export type Attributes = Record<string, AttributeValue>;

/** An attribute value as text for messages and comparisons: a scalar as
 * String() writes it, a list or map as util.inspect does (never "[object Object]"). */
export function attributeText(v: AttributeValue | undefined): string {
  return typeof v === 'object' && v !== null ? inspect(v) : String(v);
}

export interface ReceivedEvent {
  name: string;
  timeUnixNano: bigint;
  attributes: Attributes;
}

export interface ReceivedLink {
  traceId: string;
  spanId: string;
  traceState: string;
  attributes: Attributes;
}

/** One span as the collector received it, flattened with its resource and scope. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  traceState: string;
  name: string;
  kind: SpanKindName;
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  status: { code: StatusCodeName; message?: string };
  attributes: Attributes;
  events: ReceivedEvent[];
  links: ReceivedLink[];
  resource: Attributes;
  /** `schemaUrl`: the ScopeSpans' schema URL ('' when unset). */
  scope: { name: string; version: string; attributes: Attributes; schemaUrl: string };
  /** The span's OTLP JSON as written by the collector, for checks the flattening loses. */
  raw: OtlpJsonSpan;
}

export interface StartCollectorOptions {
  /** Defaults to $GOTRAIL_OTELCOL, then build/collector/otelcol. */
  binaryPath?: string;
  /** How long to wait for the receivers to accept connections (default 30 s). */
  startTimeoutMs?: number;
  /** The collector's own log level (default 'info'); its logs go to lastStderr(). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Keep the temporary directory (config, received spans) after stop(), e.g. to inspect a failure. */
  keepFiles?: boolean;
  /** Listen for OTLP/HTTP on this port (e.g. a collector coming back where an agent already sends). Default: a free port. */
  httpPort?: number;
  /** Listen for OTLP/HTTP on this address (e.g. '::1', or '0.0.0.0' for every address of the host). Default 127.0.0.1. */
  httpHost?: string;
}

export interface Collector {
  readonly binaryPath: string;
  /** e.g. 'http://127.0.0.1:43181'; traces go to `${otlpHttpEndpoint}/v1/traces`. */
  readonly otlpHttpEndpoint: string;
  /** e.g. 'http://127.0.0.1:43182' (plaintext gRPC). */
  readonly otlpGrpcEndpoint: string;
  readonly pid: number;
  /** Directory holding config.yaml and traces.jsonl. */
  readonly dir: string;
  readonly outputPath: string;
  /** Every span received since start (or since the last clear()), in arrival order. */
  spans(): Promise<ReceivedSpan[]>;
  /** Polls spans() until pred holds; rejects after timeoutMs with what did arrive. */
  waitForSpans(pred: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Forgets the spans received so far, so a collector can be shared by several tests. */
  clear(): Promise<void>;
  /** The tail of the collector's stderr (its logs, or a Go panic). */
  lastStderr(): string;
  /** Graceful shutdown, then SIGKILL if it hangs. Safe to call more than once. */
  stop(): Promise<void>;
}

const STDERR_TAIL_BYTES = 64 * 1024;
const POLL_MS = 50;
const STOP_GRACE_MS = 10_000;
// A port picked free can be taken before the collector binds it; the start is
// then retried on new ports rather than failing the test.
const BIND_ATTEMPTS = 3;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Runs on a normal exit and on process.exit(); a kill of the test process is
  // covered by the parent-death signal set at spawn.
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** Starts a collector and resolves once both receivers accept connections. */
export async function startCollector(opts: StartCollectorOptions = {}): Promise<Collector> {
  const binaryPath = opts.binaryPath ?? process.env['GOTRAIL_OTELCOL'] ?? defaultCollectorBinary;
  if (!existsSync(binaryPath)) {
    throw new Error(
      `OpenTelemetry Collector binary not found at ${binaryPath}: run \`bash deploy/setup.sh\` ` +
        '(or `make -f deploy/build.mk collector`) to build it',
    );
  }
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= BIND_ATTEMPTS; attempt++) {
    try {
      return await startOnce(binaryPath, opts);
    } catch (e) {
      lastError = e as Error;
      if (!(e instanceof CollectorStartError) || !e.addressInUse) throw e;
    }
  }
  throw lastError ?? new Error('the collector did not start');
}

class CollectorStartError extends Error {
  readonly addressInUse: boolean;
  constructor(message: string, stderr: string) {
    super(message);
    this.name = 'CollectorStartError';
    this.addressInUse = /address already in use/i.test(stderr);
  }
}

async function startOnce(binaryPath: string, opts: StartCollectorOptions): Promise<Collector> {
  const [freeHttp, grpcPort] = (await freePorts(2)) as [number, number];
  const httpPort = opts.httpPort ?? freeHttp;
  const dir = await mkdtemp(join(tmpdir(), 'gotrail-otelcol-'));
  const outputPath = join(dir, 'traces.jsonl');
  const configPath = join(dir, 'config.yaml');
  const httpHost = opts.httpHost ?? '127.0.0.1';
  // where this host reaches the listener: a wildcard is reached on loopback
  const httpReach = httpHost === '0.0.0.0' ? '127.0.0.1' : httpHost === '::' ? '::1' : httpHost;
  const httpHostPort = (h: string): string => (h.includes(':') ? `[${h}]:${httpPort}` : `${h}:${httpPort}`);
  await writeFile(configPath, collectorConfig({ httpEndpoint: httpHostPort(httpHost), grpcPort, outputPath, logLevel: opts.logLevel ?? 'info' }));

  // setpriv's parent-death signal kills the collector even when the test
  // process itself is killed and no exit hook runs.
  const withPdeathsig = existsSync('/usr/bin/setpriv');
  const command = withPdeathsig ? '/usr/bin/setpriv' : binaryPath;
  const args = [...(withPdeathsig ? ['--pdeathsig', 'KILL', '--', binaryPath] : []), '--config', `file:${configPath}`];
  const child = spawn(command, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  installExitHook();
  live.add(child);
  // A test that forgets stop() must not keep its process alive: the exit hook
  // ends the collector then. Every wait below runs its own timer, which keeps
  // the process alive while the helper itself is waiting.
  child.unref();
  (child.stderr as Socket).unref();

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
    if (stderr.length > 2 * STDERR_TAIL_BYTES) stderr = stderr.slice(-STDERR_TAIL_BYTES);
  });
  const lastStderr = (): string => stderr.slice(-STDERR_TAIL_BYTES);

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnFailure: Error | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(child);
      resolve();
    });
    // Emitted instead of 'exit' when the binary cannot be run at all.
    child.once('error', (err) => {
      spawnFailure ??= err;
      exited ??= { code: null, signal: null };
      live.delete(child);
      resolve();
    });
  });

  // 'exit' can come before the last of stderr has been read.
  const stderrClosed = new Promise<void>((resolve) => child.stderr.once('close', resolve));
  const waitExit = (ms: number): Promise<boolean> => within(exitPromise, ms);
  const kill = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    if (await waitExit(STOP_GRACE_MS)) return;
    child.kill('SIGKILL');
    await waitExit(STOP_GRACE_MS);
  };

  const cleanupFailedStart = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGKILL');
      await waitExit(STOP_GRACE_MS);
    }
    await within(stderrClosed, 1000);
    if (!opts.keepFiles) await rm(dir, { recursive: true, force: true });
  };

  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await waitExit(POLL_MS);
    if (spawnFailure) {
      await cleanupFailedStart();
      throw new CollectorStartError(`could not run the OpenTelemetry Collector ${binaryPath}: ${spawnFailure.message}`, '');
    }
    if (exited) {
      await cleanupFailedStart();
      const how = exited.signal ? `signal ${exited.signal}` : `exit code ${exited.code}`;
      throw new CollectorStartError(
        `the OpenTelemetry Collector exited during start-up (${how}); stderr tail:\n${tail(lastStderr())}`,
        lastStderr(),
      );
    }
    if ((await accepts(httpPort, httpReach)) && (await accepts(grpcPort))) break;
    if (Date.now() > deadline) {
      await cleanupFailedStart();
      throw new CollectorStartError(
        `the OpenTelemetry Collector did not accept connections on ${httpHostPort(httpReach)} (OTLP/HTTP) and ` +
          `127.0.0.1:${grpcPort} (OTLP/gRPC) within ${timeoutMs} ms; stderr tail:\n${tail(lastStderr())}`,
        lastStderr(),
      );
    }
  }

  const reader = new SpanFileReader(outputPath);
  let stopping: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await kill();
      // What was received stays readable after stop, even once the files are gone.
      await reader.read();
      reader.freeze();
      if (!opts.keepFiles) await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const spans = (): Promise<ReceivedSpan[]> => reader.read();

  const waitForSpans = async (
    pred: (spans: ReceivedSpan[]) => boolean,
    waitMs = 10_000,
  ): Promise<ReceivedSpan[]> => {
    const until = Date.now() + waitMs;
    for (;;) {
      const got = await spans();
      if (pred(got)) return got;
      if (exited && !stopping) {
        await within(stderrClosed, 1000);
        throw new Error(
          `the OpenTelemetry Collector exited while waiting for spans; ${summarize(got)}; stderr tail:\n${tail(lastStderr())}`,
        );
      }
      if (Date.now() > until) {
        throw new Error(`spans awaited for ${waitMs} ms did not arrive; ${summarize(got)}`);
      }
      await sleep(POLL_MS);
    }
  };

  return {
    binaryPath,
    otlpHttpEndpoint: `http://${httpHostPort(httpReach)}`,
    otlpGrpcEndpoint: `http://127.0.0.1:${grpcPort}`,
    pid: child.pid!,
    dir,
    outputPath,
    spans,
    waitForSpans,
    clear: () => reader.clear(),
    lastStderr,
    stop,
  };
}

function collectorConfig(c: { httpEndpoint: string; grpcPort: number; outputPath: string; logLevel: string }): string {
  // JSON is valid YAML, and JSON.stringify quotes the path whatever it holds.
  const config = {
    receivers: {
      otlp: {
        protocols: {
          http: { endpoint: c.httpEndpoint },
          grpc: { endpoint: `127.0.0.1:${c.grpcPort}` },
        },
      },
    },
    exporters: {
      file: {
        path: c.outputPath,
        format: 'json',
        // With rotation configured the exporter writes each request straight
        // to the file (no buffer), before the receiver answers the sender. The
        // size limit is only there so that a test never sees a rotation.
        rotation: { max_megabytes: 4096, max_backups: 1 },
      },
    },
    service: {
      telemetry: {
        // No self-metrics: otherwise the collector serves Prometheus metrics on
        // a fixed port, which two collectors at once would fight over.
        metrics: { level: 'none' },
        logs: { level: c.logLevel, encoding: 'console' },
      },
      pipelines: {
        traces: { receivers: ['otlp'], exporters: ['file'] },
      },
    },
  };
  return JSON.stringify(config, null, 2) + '\n';
}

/** Reads the exporter's JSON lines incrementally; a line still being written is left for the next read. */
class SpanFileReader {
  private readonly path: string;
  private offset = 0;
  private pending = Buffer.alloc(0);
  private parsed: ReceivedSpan[] = [];
  private clearedAt = 0;
  private frozen = false;
  private reading: Promise<ReceivedSpan[]> | undefined;

  constructor(path: string) {
    this.path = path;
  }

  freeze(): void {
    this.frozen = true;
  }

  async clear(): Promise<void> {
    await this.read();
    this.clearedAt = this.parsed.length;
  }

  read(): Promise<ReceivedSpan[]> {
    // Concurrent callers share one read so the offset bookkeeping stays consistent.
    this.reading ??= this.readMore().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readMore(): Promise<ReceivedSpan[]> {
    if (!this.frozen) {
      let file;
      try {
        file = await open(this.path, 'r');
      } catch (e) {
        // The exporter creates the file on its first write.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      if (file) {
        try {
          const { size } = await file.stat();
          // In bounded chunks, each parsed line by line: what a run of
          // hundreds of thousands of spans writes exceeds what one string
          // (or one Buffer read) may hold.
          while (size > this.offset) {
            const chunk = Buffer.alloc(Math.min(size - this.offset, READ_CHUNK_BYTES));
            const { bytesRead } = await file.read(chunk, 0, chunk.length, this.offset);
            if (bytesRead === 0) break;
            this.offset += bytesRead;
            this.pending = this.pending.length ? Buffer.concat([this.pending, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
            this.parseLines();
          }
        } finally {
          await file.close();
        }
      }
    }
    return this.parsed.slice(this.clearedAt);
  }

  /** Parses the complete lines of `pending`, keeping a line still being written. */
  private parseLines(): void {
    let start = 0;
    for (let nl = this.pending.indexOf(0x0a, start); nl >= 0; nl = this.pending.indexOf(0x0a, start)) {
      const line = this.pending.toString('utf8', start, nl);
      start = nl + 1;
      if (line.trim() === '') continue;
      // one at a time: spreading a large request's spans into push() overflows the stack
      for (const span of parseExportLine(line)) this.parsed.push(span);
    }
    // a copy, so the chunk the remainder came from can be freed
    this.pending = Buffer.from(this.pending.subarray(start));
  }
}

/** How much of the exporter's file one read takes. */
const READ_CHUNK_BYTES = 16 * 1024 * 1024;

// --- OTLP JSON (as written by the collector's pdata JSON marshaler) ----------

export interface OtlpJsonAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number | string;
  arrayValue?: { values?: OtlpJsonAnyValue[] };
  kvlistValue?: { values?: OtlpJsonKeyValue[] };
  bytesValue?: string;
}

export interface OtlpJsonKeyValue {
  key: string;
  value?: OtlpJsonAnyValue;
}

export interface OtlpJsonSpan {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  traceState?: string;
  flags?: number;
  name?: string;
  kind?: number;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: OtlpJsonKeyValue[];
  droppedAttributesCount?: number;
  events?: { timeUnixNano?: string | number; name?: string; attributes?: OtlpJsonKeyValue[] }[];
  links?: { traceId?: string; spanId?: string; traceState?: string; attributes?: OtlpJsonKeyValue[] }[];
  status?: { code?: number; message?: string };
}

interface OtlpJsonTracesRequest {
  resourceSpans?: {
    resource?: { attributes?: OtlpJsonKeyValue[] };
    scopeSpans?: {
      scope?: { name?: string; version?: string; attributes?: OtlpJsonKeyValue[] };
      schemaUrl?: string;
      spans?: OtlpJsonSpan[];
    }[];
  }[];
}

const SPAN_KINDS: readonly SpanKindName[] = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
const STATUS_CODES: readonly StatusCodeName[] = ['UNSET', 'OK', 'ERROR'];

/** Flattens one line of the file exporter's output (an ExportTraceServiceRequest) into spans. */
export function parseExportLine(line: string): ReceivedSpan[] {
  const request = JSON.parse(line) as OtlpJsonTracesRequest;
  const out: ReceivedSpan[] = [];
  for (const rs of request.resourceSpans ?? []) {
    const resource = toAttributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      const scope = {
        name: ss.scope?.name ?? '',
        version: ss.scope?.version ?? '',
        attributes: toAttributes(ss.scope?.attributes),
        schemaUrl: ss.schemaUrl ?? '',
      };
      for (const span of ss.spans ?? []) {
        const status: ReceivedSpan['status'] = { code: enumName(STATUS_CODES, span.status?.code, 'status code') };
        if (span.status?.message) status.message = span.status.message;
        out.push({
          traceId: hexId(span.traceId),
          spanId: hexId(span.spanId),
          parentSpanId: hexId(span.parentSpanId),
          traceState: span.traceState ?? '',
          name: span.name ?? '',
          kind: enumName(SPAN_KINDS, span.kind, 'span kind'),
          startTimeUnixNano: BigInt(span.startTimeUnixNano ?? 0),
          endTimeUnixNano: BigInt(span.endTimeUnixNano ?? 0),
          status,
          attributes: toAttributes(span.attributes),
          events: (span.events ?? []).map((e) => ({
            name: e.name ?? '',
            timeUnixNano: BigInt(e.timeUnixNano ?? 0),
            attributes: toAttributes(e.attributes),
          })),
          links: (span.links ?? []).map((l) => ({
            traceId: hexId(l.traceId),
            spanId: hexId(l.spanId),
            traceState: l.traceState ?? '',
            attributes: toAttributes(l.attributes),
          })),
          resource,
          scope,
          raw: span,
        });
      }
    }
  }
  return out;
}

export function toAttributes(kvs: OtlpJsonKeyValue[] | undefined): Attributes {
  const out: Attributes = {};
  for (const kv of kvs ?? []) out[kv.key] = toValue(kv.value);
  return out;
}

export function toValue(v: OtlpJsonAnyValue | undefined): AttributeValue {
  if (v === undefined) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) {
    const n = BigInt(v.intValue);
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  }
  // Non-finite doubles are written as the strings "NaN", "Infinity", "-Infinity".
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(toValue);
  if (v.kvlistValue !== undefined) return toAttributes(v.kvlistValue.values);
  if (v.bytesValue !== undefined) return new Uint8Array(Buffer.from(v.bytesValue, 'base64'));
  return null;
}

function hexId(id: string | undefined): string {
  return (id ?? '').toLowerCase();
}

function enumName<T extends string>(names: readonly T[], value: number | undefined, what: string): T {
  const name = names[value ?? 0];
  if (name === undefined) throw new Error(`unknown ${what} ${value} in the collector's output`);
  return name;
}

// --- helpers -------------------------------------------------------------------

async function freePorts(n: number): Promise<number[]> {
  // All listeners stay open until every port is known, so the n ports differ.
  const servers = await Promise.all(
    Array.from({ length: n }, () => {
      const server = createServer();
      return new Promise<typeof server>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    }),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === 'string') throw new Error('unexpected listener address');
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

function accepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(1000, () => done(false));
  });
}

/** Resolves true when p settles within ms, else false; the timer never outlives the wait. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function tail(text: string, lines = 40): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n') || '(empty)';
}

function summarize(spans: ReceivedSpan[]): string {
  if (spans.length === 0) return 'no span received';
  const shown = spans.slice(0, 20).map((s) => `${s.name} [${s.kind}] trace=${s.traceId} span=${s.spanId}`);
  const more = spans.length > shown.length ? `\n  … and ${spans.length - shown.length} more` : '';
  return `${spans.length} span(s) received:\n  ${shown.join('\n  ')}${more}`;
}
