/**
 * `gotrail demo`: two sample Go services (shop → inventory), the agent with
 * the console exporter, a few requests, and the traces printed as trees.
 * Needs nothing outside this machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.ts';
import { ConsoleTreeExporter } from '../export/console-tree.ts';
import { newSpanId, newTraceId } from '../spans/ids.ts';
import { createLogger, isLogLevel } from '../util/log.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { checkEnvironment } from './run.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SERVICE_BIN = join(root, 'build', 'go', 'go1.26', 'plain', 'demo-service');

export const demoHelp = `Usage: gotrail demo [--log-level LEVEL]

Starts two sample Go services (shop, which calls inventory), traces them with
gotrail, sends a few requests and prints the traces as trees. The services know
nothing about tracing: every span comes from eBPF probes.
`;

function startService(role: string, args: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(SERVICE_BIN, ['-role', role, ...args], {
    env: { ...process.env, OTEL_SERVICE_NAME: role, OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=demo' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${role} did not start within 10 s`)), 10_000);
    child.once('exit', (code) => reject(new Error(`${role} exited early (code ${code})`)));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://${m[1]}` });
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

export async function runDemo(argv: string[], out: (s: string) => void): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { 'log-level': { type: 'string', default: 'warn' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    out(demoHelp);
    return EXIT.OK;
  }
  if (!isLogLevel(values['log-level'])) throw new CliError(`--log-level: unknown level ${values['log-level']}`, EXIT.USAGE);
  checkEnvironment();
  if (!existsSync(SERVICE_BIN)) throw new CliError(`demo services not built (${SERVICE_BIN}): run bash deploy/setup.sh`, EXIT.ENVIRONMENT);

  const log = createLogger(values['log-level']);
  const children: ChildProcess[] = [];
  const agent = new Agent(log, {
    exporter: new ConsoleTreeExporter((t) => out(t), 300),
    selection: { includeExe: [SERVICE_BIN] },
    scanIntervalMs: 200,
    batcher: { scheduledDelayMillis: 200 },
    // the demo's requests come from this very process: they are what is shown
    skipOwnRequests: false,
  });
  try {
    out('gotrail demo: starting the agent (console exporter)\n');
    await agent.start();
    const inventory = await startService('inventory', []);
    children.push(inventory.child);
    const shop = await startService('shop', ['-inventory', inventory.url]);
    children.push(shop.child);
    out(`gotrail demo: started inventory (pid ${inventory.child.pid}) at ${inventory.url} and shop (pid ${shop.child.pid}) at ${shop.url}\n`);
    const want = [inventory.child.pid!, shop.child.pid!];
    const deadline = Date.now() + 10_000;
    while (!want.every((p) => agent.tracedPids().includes(p))) {
      if (Date.now() > deadline) throw new CliError('the demo services were not traced within 10 s (run with --log-level info to see why)', EXIT.FAILED);
      await new Promise((r) => setTimeout(r, 100));
    }
    out('gotrail demo: both services traced; sending requests\n\n');
    const calls: Array<[string, Record<string, string>]> = [
      ['/checkout?item=teapot', { traceparent: `00-${newTraceId()}-${newSpanId()}-01` }],
      ['/checkout?item=unicorn', { traceparent: `00-${newTraceId()}-${newSpanId()}-01` }],
      ['/checkout?item=kettle', {}],
      ['/health', {}],
    ];
    for (const [path, headers] of calls) {
      const status = await get(shop.url + path, headers);
      out(`  GET ${path}${headers.traceparent ? ' (with traceparent)' : ''} → ${status}\n`);
    }
    out('\n');
    await agent.flush();
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await agent.stop();
  }
  out('gotrail demo: done. The shop\'s outgoing call (CLIENT) and the inventory\'s request (SERVER)\nare linked on this node by their TCP connection: no header was written into either program.\n');
  return EXIT.OK;
}
