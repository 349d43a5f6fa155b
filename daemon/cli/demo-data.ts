/**
 * The second part of `gotrail demo`: a system with a database, a cache and a
 * queue — web (HTTP) calls checkout over gRPC, which reads PostgreSQL,
 * counts the order in Redis and writes it to Kafka; fulfilment reads the
 * order from Kafka and marks it in Redis — on real PostgreSQL, Redis and
 * Kafka servers started the way the tests start them (test/support/servers:
 * loopback, temporary directories, removed afterwards). The programs are the
 * test program test/programs/shop, in three modes.
 *
 * The servers come from the packages and jars set-up installs for the tests;
 * where one is missing the part is skipped with the reason.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The system's one Go program; `-mode` says which service it plays. */
export const DEMO_SHOP_BIN = join(root, 'build', 'go', 'go1.26', 'plain', 'shop');
/** How long the Kafka broker and the checkout service may take to be ready (ms). */
const READY_MS = 120_000;
/** Orders the demo places. */
export const DEMO_ORDERS = 3;

interface Server {
  stop(): Promise<void>;
}

/** Real PostgreSQL, Redis and Kafka servers, started at once (the broker's JVM takes the longest). */
export interface DemoBackends {
  pgUrl: string;
  redisAddr: string;
  bootstrap: string;
  stop(): Promise<void>;
}

/** Why the backends cannot run here, or undefined. */
async function missing(): Promise<string | undefined> {
  if (!existsSync(DEMO_SHOP_BIN)) return `${DEMO_SHOP_BIN} is not built`;
  const { postgresBinDir } = await import('../../test/support/servers/postgres.ts');
  const pg = postgresBinDir();
  if (typeof pg !== 'string') return pg.skip;
  const { REDIS_SERVER } = await import('../../test/support/servers/redis.ts');
  if (!existsSync(REDIS_SERVER)) return `${REDIS_SERVER} is not installed`;
  const { kafkaSkipReason } = await import('../../test/support/servers/kafka.ts');
  return kafkaSkipReason();
}

/**
 * Starts the three servers; resolves with why it cannot when one is not
 * installed, and rejects (having stopped the others) naming the server that
 * did not start and why.
 */
export async function startBackends(): Promise<DemoBackends | { skip: string }> {
  const why = await missing();
  if (why !== undefined) return { skip: why };
  const { startPostgres } = await import('../../test/support/servers/postgres.ts');
  const { startRedis } = await import('../../test/support/servers/redis.ts');
  const { startKafka } = await import('../../test/support/servers/kafka.ts');
  const started: Server[] = [];
  const names = ['PostgreSQL', 'Redis', 'Kafka'];
  const results = await Promise.allSettled([startPostgres(), startRedis(), startKafka()]);
  for (const r of results) if (r.status === 'fulfilled') started.push(r.value);
  let stopping: Promise<void> | undefined;
  // idempotent: the demo stops them when done and again on its way out
  const stop = (): Promise<void> => (stopping ??= Promise.allSettled(started.map((s) => s.stop())).then(() => undefined));
  const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${names[i]}: ${String(r.reason)}`] : []));
  if (failed.length > 0) {
    await stop();
    throw new Error(`a server did not start: ${failed.join('; ')}`);
  }
  const [pg, redis, kafka] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
    { url: string }, { addr: string }, { bootstrap: string },
  ];
  return { pgUrl: pg.url, redisAddr: redis.addr, bootstrap: kafka.bootstrap, stop };
}

interface Service {
  child: ChildProcess;
  addr: string;
  /** Everything the service printed so far. */
  output(): string;
}

function startMode(mode: string, service: string, args: string[], ready: RegExp, children: ChildProcess[]): Promise<Service> {
  const child = spawn(DEMO_SHOP_BIN, ['-mode', mode, ...args], {
    env: { ...process.env, OTEL_SERVICE_NAME: service, OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=demo' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // the caller's from its start: whatever ends the demo stops it, ready or not
  children.push(child);
  const kill = (): void => void child.kill('SIGTERM');
  process.once('exit', kill);
  child.once('exit', () => process.off('exit', kill));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`${service} was not ready within ${READY_MS / 1000} s`));
    }, READY_MS);
    child.once('exit', (code) => reject(new Error(`${service} exited early (code ${code})`)));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = ready.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ child, addr: m[1]!, output: () => buf });
      }
    });
  });
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Spans each order makes: web SERVER and CLIENT; checkout SERVER, SQL, Redis, PRODUCER; fulfilment CONSUMER, Redis. */
export const SPANS_PER_ORDER = 8;

/**
 * Runs the system on `backends` while the agent traces {@link DEMO_SHOP_BIN}:
 * starts the three services (each added to `children` as it is spawned; the
 * caller stops them, whatever happens), waits until `traced(pids)` holds,
 * places {@link DEMO_ORDERS} orders, and waits (up to 10 s) until `spans`
 * holds their spans; `onTraced` is called once they are traced. Returns a summary of the links across processes, with
 * the spans missing when some did not come.
 */
export async function runDataDemo(
  backends: DemoBackends, out: (s: string) => void, traced: (pids: number[]) => boolean, spans: ReadableSpan[],
  children: ChildProcess[], onTraced?: () => void | Promise<void>,
): Promise<{ summary: string }> {
  const common = ['-redis', backends.redisAddr, '-kafka', backends.bootstrap, '-topic', 'orders'];
  const checkout = await startMode('orders', 'checkout', ['-pg', backends.pgUrl, ...common], /listening on (\S+)/, children);
  if (!await until(() => /grpc on \S+/.test(checkout.output()), READY_MS)) throw new Error(`checkout was not ready within ${READY_MS / 1000} s`);
  // checkout has made the topic: fulfilment reads it at once, long-polling while it waits for orders
  const fulfilment = await startMode('consumer', 'fulfilment', common, /listening on (\S+)/, children);
  const grpcAddr = /grpc on (\S+)/.exec(checkout.output())![1]!;
  const web = await startMode('front', 'web', ['-orders', grpcAddr], /listening on (\S+)/, children);
  const pids = [web, checkout, fulfilment].map((s) => s.child.pid!);
  out(`gotrail demo: started web (HTTP, pid ${web.child.pid}), checkout (gRPC, pid ${checkout.child.pid}) on PostgreSQL ${backends.pgUrl.replace(/\/\/[^@]*@/, '//')},\n`);
  out(`              Redis ${backends.redisAddr} and Kafka ${backends.bootstrap}, and fulfilment (Kafka consumer, pid ${fulfilment.child.pid})\n`);
  if (!await until(() => traced(pids), 10_000)) throw new Error('the services were not traced within 10 s (run with --log-level info to see why)');
  await onTraced?.();
  out('gotrail demo: all three services traced; placing orders\n\n');
  const from = spans.length;
  for (let i = 1; i <= DEMO_ORDERS; i++) {
    const res = await get(`http://${web.addr}/order?id=${i}`);
    out(`  GET /order?id=${i} → ${res.status} ${res.body.trim()}\n`);
  }
  out('\n');
  const orderTraces = (): Set<string> => new Set(spans.slice(from).filter((s) => s.attributes['url.path'] === '/order').map((s) => s.spanContext().traceId));
  const orderSpans = (): ReadableSpan[] => spans.slice(from).filter((s) => orderTraces().has(s.spanContext().traceId));
  const complete = await until(() => orderSpans().length >= DEMO_ORDERS * SPANS_PER_ORDER, 10_000);
  // the orders' reads: in an order's trace, or a root when not linked
  const consumed = spans.slice(from).filter((s) => s.kind === SpanKind.CONSUMER && (orderTraces().has(s.spanContext().traceId) || s.parentSpanContext === undefined));
  let summary = dataLinkSummary(orderSpans(), consumed);
  if (!complete) summary += missingNote(spans.slice(from));
  return { summary };
}

/** Which of the orders' spans did not come, by service and kind: what a short trace lacks. */
function missingNote(spans: ReadableSpan[]): string {
  const want: Array<[string, SpanKind, number]> = [
    ['web', SpanKind.SERVER, 1], ['web', SpanKind.CLIENT, 1],
    ['checkout', SpanKind.SERVER, 1], ['checkout', SpanKind.CLIENT, 2], ['checkout', SpanKind.PRODUCER, 1],
    ['fulfilment', SpanKind.CONSUMER, 1], ['fulfilment', SpanKind.CLIENT, 1],
  ];
  const svc = (s: ReadableSpan): string => String(s.resource.attributes['service.name']);
  const short = want.flatMap(([service, kind, per]) => {
    const got = spans.filter((s) => svc(s) === service && s.kind === kind).length;
    return got < per * DEMO_ORDERS ? [`${service} ${SpanKind[kind]} ${got} of ${per * DEMO_ORDERS}`] : [];
  });
  return `gotrail demo: part two: not every span of the ${DEMO_ORDERS} orders came within 10 s`
    + `${short.length > 0 ? ` (${short.join(', ')})` : ' (some not in an order\'s trace)'}\n`;
}

/** What the spans of the orders' traces and the consumer's reads say about the links across processes. */
function dataLinkSummary(spans: ReadableSpan[], consumed: ReadableSpan[]): string {
  const ids = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  const parentOf = (s: ReadableSpan): ReadableSpan | undefined => ids.get(s.parentSpanContext?.spanId ?? '');
  const linked = consumed.filter((s) => parentOf(s)?.kind === SpanKind.PRODUCER).length;
  const traces = new Set(spans.map((s) => s.spanContext().traceId)).size;
  return `gotrail demo: ${traces} orders, ${traces} traces; fulfilment's reads (CONSUMER) and checkout's writes (PRODUCER): ${linked} of ${consumed.length} linked\n`
    + 'by the message\'s topic, partition and offset, seen by both programs; no header was written into a message.\n';
}
