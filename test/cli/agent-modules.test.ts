/**
 * The running agent keeps resident only the modules it uses: each one loaded
 * stays in V8's heap for the agent's life (its source, its functions), so a
 * dependency pulled in for one constant costs megabytes of resident memory.
 * Loads the agent's entry point (`gotrail run`'s module graph) in a fresh
 * Node and lists every module it loaded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../support/agent-process.ts';

const probe = `
import { registerHooks } from 'node:module';
const urls = [];
registerHooks({ load(url, context, next) { urls.push(url); return next(url, context); } });
await import(${JSON.stringify(join(repoRoot, 'daemon', 'cli', 'run.ts'))});
await import(${JSON.stringify(join(repoRoot, 'daemon', 'export', 'exporters.ts'))});
await import(${JSON.stringify(join(repoRoot, 'daemon', 'export', 'otlp-exporter.ts'))});
const { retAddresses } = await import(${JSON.stringify(join(repoRoot, 'daemon', 'analysis', 'instructions.ts'))});
retAddresses(new Uint8Array([0xc3]), 0); // the decoder is loaded on first use
// the OTLP exporter's transport, sending once: it loads node:http only then
const { createServer } = process.getBuiltinModule('node:http');
const server = createServer((req, res) => req.resume().on('end', () => res.end())).listen(0, '127.0.0.1');
await new Promise((r) => server.once('listening', r));
const { createHttpExporterTransport } = await import(${JSON.stringify(join(repoRoot, 'node_modules', '@opentelemetry', 'otlp-exporter-base', 'build', 'src', 'transport', 'http-exporter-transport.js'))});
const { httpAgentFactoryFromOptions } = await import('@opentelemetry/otlp-exporter-base/node-http');
const sent = await createHttpExporterTransport({ url: 'http://127.0.0.1:' + server.address().port + '/v1/traces', headers: async () => ({}), compression: 'none', agentFactory: httpAgentFactoryFromOptions({ keepAlive: false }) }).send(new Uint8Array([0]), 5000);
server.close();
process.stdout.write(JSON.stringify({ urls, builtins: process.moduleLoadList, sent: sent.status }));
`;

test("gotrail run's modules load none of what the agent does not use", () => {
  const { urls, builtins, sent } = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', cwd: repoRoot })) as { urls: string[]; builtins: string[]; sent: string };
  assert.equal(sent, 'success', "the exporter's transport sent a request");
  assert.ok(urls.some((u) => u.includes('/daemon/agent/agent.ts')), 'the probe loaded the agent');
  assert.ok(urls.some((u) => u.includes('/iced-x86/iced_x86.js')), 'and the instruction decoder');
  const unwanted: Array<[RegExp, string]> = [
    [/semantic-conventions\/.*(experimental|incubating)/, 'the incubating semantic conventions (copy the names into daemon/spans/semconv.ts)'],
    [/@opentelemetry\/sdk-metrics\//, 'the metrics SDK (loaded by the otlp-transformer entry point)'],
    [/@opentelemetry\/otlp-transformer\/build\/src\/index\.js/, "the otlp-transformer entry point"],
    [/\/daemon\/cli\/(demo|demo-data|inspect)\.ts/, "other commands' modules"],
  ];
  for (const [re, what] of unwanted) assert.deepEqual(urls.filter((u) => re.test(u)), [], what);
  // also once the OTLP exporter's transport has imported node:http (daemon/export/otlp-exporter.ts)
  assert.deepEqual(builtins.filter((m) => m.includes('internal/deps/undici')), [], "Node's undici (loaded by an ES import of node:http)");
  // an ES import of a CommonJS module keeps its source twice; iced-x86's is 0.9 MB
  assert.equal(urls.filter((u) => u.includes('/iced-x86/')).length, 1, 'iced-x86 is required (CommonJS), not imported');
});

// What the launcher runs once set-up has bundled the agent (deploy/bundle.ts).
const bundleProbe = `
import { registerHooks, findSourceMap } from 'node:module';
import { readFileSync } from 'node:fs';
const urls = [];
registerHooks({ load(url, context, next) { urls.push(url); return next(url, context); } });
process.on('exit', () => {
  const main = urls.find((u) => u.endsWith('/build/agent/main.mjs'));
  // where the bundle defines main(): its origin in the sources
  const lines = main ? readFileSync(new URL(main), 'utf8').split('\\n') : [];
  const line = lines.findIndex((l) => l.includes('function main('));
  const origin = main && findSourceMap(main)?.findOrigin(line + 1, lines[line].indexOf('function main(') + 1);
  process.stderr.write('\\nPROBE' + JSON.stringify({ urls, builtins: process.moduleLoadList, origin }) + '\\n');
});
`;

test("the launcher runs set-up's bundle: one copy of each dependency, none of the other commands, stack traces mapped to the sources", () => {
  const bundle = join(repoRoot, 'build', 'agent', 'main.mjs');
  assert.ok(existsSync(bundle), `${bundle}: built by deploy/setup.sh`);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-bundle-'));
  try {
    writeFileSync(join(dir, 'probe.mjs'), bundleProbe);
    // the run command's modules load with its options parsed (--help exits after)
    const r = spawnSync(join(repoRoot, 'daemon', 'bin', 'gotrail'), ['run', '--help'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: `--import ${join(dir, 'probe.mjs')}` } });
    assert.equal(r.status, 0, r.stderr);
    const { urls, builtins, origin } = JSON.parse(/PROBE(.*)/.exec(r.stderr)![1]!) as { urls: string[]; builtins: string[]; origin: { fileName?: string } | undefined };
    assert.ok(urls.includes(pathToFileURL(bundle).href), 'the bundle ran');
    assert.deepEqual(urls.filter((u) => u.endsWith('.ts')), [], 'no TypeScript source (nothing to strip)');
    // required at run time, not bundled: the OTLP response decoder (daemon/export/otlp-exporter.ts)
    const decoder = /\/@opentelemetry\/otlp-transformer\/build\/src\/(trace|common)\/protobuf\/[\w-]+\.js$/;
    assert.deepEqual(urls.filter((u) => u.includes('/node_modules/') && !decoder.test(u)), [], 'no dependency loaded beside the bundle');
    assert.ok(builtins.includes('NativeModule internal/source_map/source_map_cache'), 'source maps enabled');
    assert.equal(origin?.fileName, pathToFileURL(join(repoRoot, 'daemon', 'cli', 'main.ts')).href, "the bundle's main() maps to daemon/cli/main.ts");
    const text = urls.filter((u) => u.startsWith('file:')).map((u) => readFileSync(new URL(u), 'utf8')).join('\n');
    for (const mod of ['demo', 'inspect']) assert.ok(!text.includes(`daemon/cli/${mod}.ts`), `${mod}'s modules are not loaded`);
    assert.ok(!builtins.some((m) => m.includes('internal/deps/undici')), "Node's undici is not loaded");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
