/**
 * `gotrail demo`: a small shop of three sample Go services — an HTTP front
 * end (shop) that calls a gRPC back end (orders), which calls an HTTP service
 * (inventory) — traced by the agent with the console exporter: a few
 * requests, and the traces printed as trees; then a system with a database,
 * a cache and a queue on real PostgreSQL, Redis and Kafka servers
 * (demo-data.ts). Needs nothing outside this machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../agent/agent.ts';
import { ConsoleTreeExporter } from '../export/console-tree.ts';
import { newSpanId, newTraceId } from '../spans/ids.ts';
import { createLogger, isLogLevel } from '../util/log.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { checkEnvironment } from './run.ts';
import { DEMO_SHOP_BIN, runDataDemo, startBackends } from './demo-data.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The demo's one Go program; `-role` says which service it plays. */
export const DEMO_SERVICE_BIN = join(root, 'build', 'go', 'go1.26', 'plain', 'demo-service');

export const demoHelp = `Usage: gotrail demo [--log-level LEVEL]

Starts three sample Go services — shop (HTTP), which calls orders over gRPC,
which calls inventory over HTTP — traces them with gotrail, sends a few
requests and prints the traces as trees. Then a second system: web (HTTP)
calls checkout over gRPC, which queries PostgreSQL, counts in Redis and
writes to Kafka, and fulfilment reads the order from Kafka and writes to
Redis, on real servers started for the demo. The services know nothing
about tracing: every span comes from eBPF probes.
`;

/** Test hooks of {@link runDemo}. */
export interface DemoOptions {
  /** Called with every span the agent makes, before it is printed. */
  onSpan?: (span: ReadableSpan) => void;
  /**
   * Called when a stage is reached, its programs and servers running:
   * 'part-one' (the first system's services traced, the second's servers
   * starting), 'part-two' (the second system's services traced). What it
   * throws ends the demo as any failure does.
   */
  onStage?: (stage: 'part-one' | 'part-two') => void | Promise<void>;
}

function startService(role: string, args: string[], children: ChildProcess[]): Promise<{ child: ChildProcess; addr: string }> {
  const child = spawn(DEMO_SERVICE_BIN, ['-role', role, ...args], {
    env: { ...process.env, OTEL_SERVICE_NAME: role, OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=demo' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // the demo's from its start: whatever ends the demo stops it, ready or not
  children.push(child);
  // however the demo ends (an error, a closed stdout), its services end with it
  const kill = (): void => void child.kill('SIGTERM');
  process.once('exit', kill);
  child.once('exit', () => process.off('exit', kill));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`${role} did not start within 10 s`));
    }, 10_000);
    child.once('exit', (code) => reject(new Error(`${role} exited early (code ${code})`)));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ child, addr: m[1]! });
      }
    });
  });
}

function get(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Stops `child` (SIGTERM, SIGKILL after 5 s) and resolves once it has exited. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** The signals that end the demo; each stops what it started first. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** What the spans say about the links between the services (for the closing note). */
function linkSummary(spans: ReadableSpan[]): string {
  const ids = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  const svc = (s: ReadableSpan): string => String(s.resource.attributes['service.name']);
  const parentOf = (s: ReadableSpan): ReadableSpan | undefined => ids.get(s.parentSpanContext?.spanId ?? '');
  const grpcServer = spans.filter((s) => s.kind === SpanKind.SERVER && svc(s) === 'orders');
  const httpServer = spans.filter((s) => s.kind === SpanKind.SERVER && svc(s) === 'inventory');
  const grpcLinked = grpcServer.filter((s) => parentOf(s)?.kind === SpanKind.CLIENT && svc(parentOf(s)!) === 'shop').length;
  const httpLinked = httpServer.filter((s) => parentOf(s)?.kind === SpanKind.CLIENT && svc(parentOf(s)!) === 'orders').length;
  const lines = [
    `gotrail demo: done. orders' HTTP calls (CLIENT) and inventory's requests (SERVER): ${httpLinked} of ${httpServer.length} linked on this node`,
    'by their TCP connection, with no header written into either program.',
  ];
  if (grpcServer.length > 0 && grpcLinked === grpcServer.length) {
    lines.push(`shop's gRPC calls and orders' RPCs: all ${grpcLinked} linked by their HTTP/2 connection and stream id.`);
  } else {
    lines.push(`shop's gRPC calls and orders' RPCs: ${grpcLinked} of ${grpcServer.length} linked; an RPC not linked starts a trace of its own`);
    lines.push('(`gotrail inspect` on the orders binary says which field of its grpc-go is unknown).');
  }
  return lines.join('\n') + '\n';
}

/**
 * Runs the demo, writing its progress and the trace trees to `out`.
 * Returns the exit code; throws {@link CliError} when the environment cannot
 * run it (not root, services not built) or a service is not traced in time.
 */
export async function runDemo(argv: string[], out: (s: string) => void, opts: DemoOptions = {}): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { 'log-level': { type: 'string', default: 'warn' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    out(demoHelp);
    return EXIT.OK;
  }
  if (!isLogLevel(values['log-level'])) throw new CliError(`--log-level: unknown level ${values['log-level']}`, EXIT.USAGE);
  checkEnvironment();
  if (!existsSync(DEMO_SERVICE_BIN)) throw new CliError(`demo services not built (${DEMO_SERVICE_BIN}): run bash deploy/setup.sh`, EXIT.ENVIRONMENT);

  const log = createLogger(values['log-level']);
  const children: ChildProcess[] = [];
  const spans: ReadableSpan[] = [];
  const agent = new Agent(log, {
    exporter: new ConsoleTreeExporter((t) => out(t), 300),
    selection: { includeExe: [DEMO_SERVICE_BIN, DEMO_SHOP_BIN] },
    scanIntervalMs: 200,
    batcher: { scheduledDelayMillis: 200 },
    // the demo's requests come from this very process: they are what is shown
    skipOwnRequests: false,
    onSpan: (s) => {
      spans.push(s);
      opts.onSpan?.(s);
    },
  });
  // the Kafka broker's JVM takes longest: the servers start while the first
  // part sends its requests (not while its services start, which must be
  // up within 10 s on a busy machine)
  let backends: ReturnType<typeof startBackends> | undefined;
  // however the demo ends — returned, thrown, or a signal — every program
  // and server it started is stopped, and waited for, before it returns
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> => (stopping ??= (async () => {
    await Promise.allSettled(children.map(stopChild));
    await Promise.allSettled([
      agent.stop(),
      backends?.then((b) => ('stop' in b ? b.stop() : undefined)),
    ]);
  })());
  const onSignal = (sig: NodeJS.Signals): void => {
    out(`\ngotrail demo: ${sig}: stopping the services, the servers and the agent\n`);
    // a server still starting (the broker's JVM) is stopped once up; past
    // 30 s the servers' exit handlers kill them
    const cap = new Promise((r) => setTimeout(r, 30_000).unref());
    void Promise.race([stopAll(), cap]).finally(() => process.exit(128 + (osConstants.signals[sig] ?? 0)));
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  try {
    out('gotrail demo: starting the agent (console exporter)\n');
    await agent.start();
    const inventory = await startService('inventory', [], children);
    const orders = await startService('orders', ['-inventory', `http://${inventory.addr}`], children);
    const shop = await startService('shop', ['-orders', orders.addr], children);
    const shopUrl = `http://${shop.addr}`;
    out(`gotrail demo: started inventory (HTTP, pid ${inventory.child.pid}) at ${inventory.addr}, orders (gRPC, pid ${orders.child.pid}) at ${orders.addr}\n`);
    out(`              and shop (HTTP, pid ${shop.child.pid}) at ${shop.addr}: shop → orders → inventory\n`);
    const want = children.map((c) => c.pid!);
    const deadline = Date.now() + 10_000;
    while (!want.every((p) => agent.tracedPids().includes(p))) {
      if (Date.now() > deadline) throw new CliError('the demo services were not traced within 10 s (run with --log-level info to see why)', EXIT.FAILED);
      await new Promise((r) => setTimeout(r, 100));
    }
    backends = startBackends();
    // awaited only after the first part: a server that fails early must not be an unhandled rejection
    backends.catch(() => undefined);
    await opts.onStage?.('part-one');
    out('gotrail demo: all three services traced; sending requests\n\n');
    const calls: Array<[string, Record<string, string>]> = [
      ['/checkout?item=teapot', { traceparent: `00-${newTraceId()}-${newSpanId()}-01` }],
      ['/checkout?item=unicorn', { traceparent: `00-${newTraceId()}-${newSpanId()}-01` }],
      ['/checkout?item=kettle', {}],
      ['/health', {}],
    ];
    for (const [path, headers] of calls) {
      const status = await get(shopUrl + path, headers);
      out(`  GET ${path}${headers.traceparent ? ' (with traceparent)' : ''} → ${status}\n`);
    }
    out('\n');
    // A span ends when its Go function returns, which on busy cores may come
    // after the caller had its answer: wait (up to 5 s) for every span the
    // requests make — 5 per checkout (shop SERVER and CLIENT, orders SERVER and
    // CLIENT, inventory SERVER), 1 per health check — before printing.
    const expected = calls.reduce((n, [path]) => n + (path.startsWith('/checkout') ? 5 : 1), 0);
    const spansDeadline = Date.now() + 5000;
    while (spans.length < expected && Date.now() < spansDeadline) await new Promise((r) => setTimeout(r, 50));
    await agent.flush();
    await new Promise((r) => setTimeout(r, 300));
    out(linkSummary(spans));

    out('\ngotrail demo: part two, a database, a cache and a queue: starting PostgreSQL, Redis and Kafka\n');
    const part2 = 'part two (web → checkout → PostgreSQL, Redis, Kafka → fulfilment)';
    const b = await backends.catch((e: unknown) => {
      throw new CliError(`${part2}: ${e instanceof Error ? e.message : String(e)}`, EXIT.FAILED);
    });
    if ('skip' in b) {
      out(`gotrail demo: part two skipped: ${b.skip} (bash deploy/setup.sh installs them)\n`);
    } else {
      const traced = (pids: number[]): boolean => pids.every((p) => agent.tracedPids().includes(p));
      const data = await runDataDemo(b, out, traced, spans, children, () => opts.onStage?.('part-two')).catch((e: unknown) => {
        throw e instanceof CliError ? e : new CliError(`${part2}: ${e instanceof Error ? e.message : String(e)}`, EXIT.FAILED);
      });
      await agent.flush();
      await new Promise((r) => setTimeout(r, 300));
      out(data.summary);
    }
  } finally {
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
    await stopAll();
  }
  return EXIT.OK;
}
