/**
 * The configuration file with the agent running, as an operator changes it:
 * an edit is applied within a second (on a busy machine) and shown in
 * /status, newly included processes are attached and newly excluded ones
 * released; an invalid file is rejected, logged and counted while the
 * running configuration keeps working; a ConfigMap update (the `..data`
 * symbolic link swapped in a mounted volume) is seen, with exporter and
 * sampling changes taking effect; /healthz and /readyz answer as a
 * Kubernetes probe expects.
 */
import { test } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gotrailBin, startAgent, repoRoot, type AgentProcess } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { startBusyLoad, type BusyLoad } from '../support/busy.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

interface Status {
  config: { source: string; path?: string; generation: number; lastReload?: { result: string; error?: string; trigger: string }; pendingRestart: string[]; sources: Record<string, string> };
  processesTraced: Array<{ pid: number }>;
  processesNotSelected: Array<{ pid: number; reason: string }>;
  binaries: Array<{ path: string; pids: number[] }>;
}

async function urls(agent: AgentProcess): Promise<{ metrics: string; status: string; healthz: string; readyz: string }> {
  const metrics = await agent.metricsUrl();
  const base = metrics.replace(/\/metrics$/, '');
  return { metrics, status: `${base}/status`, healthz: `${base}/healthz`, readyz: `${base}/readyz` };
}

async function status(url: string): Promise<Status> {
  return JSON.parse((await httpRequest(url)).body) as Status;
}

/** Polls `check` every 20 ms until it returns a value; fails after `timeoutMs` with `what`. */
async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

function configDir(): string {
  return mkdtempSync(join(tmpdir(), 'gotrail-config-'));
}

/** Writes the file as editors and `kubectl cp` do: a new file renamed over the old one. */
function writeAtomically(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

/** The time of a log line (its ISO timestamp), in ms since the epoch. */
function loggedAt(line: string): number {
  return Date.parse(line.slice(0, 24));
}

test('a valid change is applied within a second on a busy machine and shown in /status: newly included processes attach, newly excluded ones are released', { skip: skipUnlessBpf() }, async () => {
  const dir = configDir();
  const file = join(dir, 'config.yaml');
  const config = (selection: string): string => `exporter:\n  kind: console\n  batch: {scheduleDelayMillis: 100}\nlingerMillis: 0\nselection:\n${selection}\n`;
  writeFileSync(file, config('  includeExe: ["/nonexistent/**"]'));
  const agent = await startAgent(['--config', file]);
  const servers: GoServer[] = [];
  let busy: BusyLoad | undefined;
  try {
    const u = await urls(agent);
    const s0 = await status(u.status);
    assert.equal(s0.config.source, 'file');
    assert.equal(s0.config.path, file);
    assert.equal(s0.config.generation, 1);
    assert.equal(s0.config.sources['selection.includeExe'], 'config file');
    assert.equal(s0.config.sources['scanIntervalMs'], '--scan-interval', 'a flag wins over the file');
    const a = await startGoServer(bin, ['-tag', 'config-a'], { OTEL_SERVICE_NAME: 'config-a' });
    servers.push(a);
    await until('the server to be judged (not selected)', 10_000, async () => (await status(u.status)).processesNotSelected.find((p) => p.pid === a.pid));

    // 1. a binary never attached: the rules apply at once; attaching it means analysing it first
    const t0 = Date.now();
    writeFileSync(file, config('  includeCmdline: ["*config-a*"]')); // an in-place write
    const reloaded = (await agent.waitFor(/^.* INFO {2}configuration reloaded file=\S+ generation=2 .*$/m, 5000))[0];
    const appliedMs = loggedAt(reloaded) - t0;
    assert.ok(appliedMs < 1000, `the change took ${appliedMs} ms to be applied (limit 1000 ms)`);
    await agent.waitTraced(a.pid, 20_000);
    const attachedMs = Date.now() - t0;
    assert.equal((await status(u.status)).config.generation, 2);
    assert.ok((await status(u.status)).processesTraced.some((p) => p.pid === a.pid));
    assert.equal((await httpRequest(`${a.url}/hello`)).status, 200);
    await agent.waitFor(/GET {2}\/hello {2}SERVER {2}200 .*\[config-a pid \d+\]/, 10_000);

    // 2. on a busy machine, each change is in /status within a second
    const b = await startGoServer(bin, ['-tag', 'config-b'], { OTEL_SERVICE_NAME: 'config-b' });
    servers.push(b);
    await until('the second server to be judged (not selected)', 10_000, async () => (await status(u.status)).processesNotSelected.find((p) => p.pid === b.pid));
    busy = startBusyLoad();
    const change = async (selection: string, generation: number, done: (s: Status) => boolean): Promise<{ s: Status; ms: number }> => {
      const t = Date.now();
      writeAtomically(file, config(selection)); // as editors and kubectl cp write
      const s = await until(`generation ${generation} applied in /status`, 10_000, async () => {
        const v = await status(u.status);
        return v.config.generation === generation && done(v) ? v : undefined;
      });
      const ms = Date.now() - t;
      assert.ok(ms < 1000, `generation ${generation} took ${ms} ms to show in /status (limit 1000 ms), written at ${new Date(t).toISOString()}:\n${agent.log().slice(-2500)}`);
      assert.equal(s.config.lastReload?.result, 'applied');
      return { s, ms };
    };
    const included = await change('  includeCmdline: ["*config-a*", "*config-b*"]', 3, (s) => s.processesTraced.some((p) => p.pid === b.pid));
    assert.ok(included.s.processesTraced.some((p) => p.pid === a.pid));
    const excluded = await change('  includeCmdline: ["*config-b*"]', 4, (s) => s.processesNotSelected.some((p) => p.pid === a.pid));
    assert.ok(!excluded.s.processesTraced.some((p) => p.pid === a.pid));
    assert.match(excluded.s.processesNotSelected.find((p) => p.pid === a.pid)!.reason, /no include rule/);
    assert.match(agent.log(), new RegExp(`process no longer selected pid=${a.pid}\\b`));
    assert.deepEqual(excluded.s.binaries.find((x) => x.path === bin)?.pids, [b.pid], 'the binary stays attached for the process still traced');
    // (an include rule stays: without one, every Go process on the machine would be traced)
    const none = await change(`  includeCmdline: ["*config-b*"]\n  excludeExe: [${JSON.stringify(bin)}]`, 5, (s) => !s.processesTraced.some((p) => p.pid === b.pid));
    assert.match(none.s.processesNotSelected.find((p) => p.pid === b.pid)!.reason, /exclude/);
    await busy.stop();
    // linger 0: the binary's probes go with its last traced process
    await until('the binary detached', 5000, async () => ((await status(u.status)).binaries.some((x) => x.path === bin) ? undefined : true));
    process.stderr.write(`config reload: applied ${appliedMs} ms after the write, a never-attached binary traced after ${attachedMs} ms; busy machine: include ${included.ms} ms, exclude ${excluded.ms} ms, exclude all ${none.ms} ms in /status\n`);
    const m = (await httpRequest(u.metrics)).body;
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="applied"}'), 4);
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="rejected"}'), 0);
    assert.equal(metric(m, 'gotrail_config_generation'), 5);
  } catch (e) {
    process.stderr.write(`DEBUG agent log:\n${agent.log().slice(-6000)}\n`);
    throw e;
  } finally {
    await busy?.stop();
    for (const s of servers) await s.stop();
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an invalid file is rejected with a logged error naming the key and a metric; the running configuration is kept', { skip: skipUnlessBpf() }, async () => {
  const dir = configDir();
  const file = join(dir, 'config.yaml');
  const good = `exporter:\n  kind: console\n  batch: {scheduleDelayMillis: 100}\nselection:\n  includeExe: [${JSON.stringify(bin)}]\n`;
  writeFileSync(file, good);
  const agent = await startAgent(['--config', file]);
  const server = await startGoServer(bin, ['-tag', 'config-invalid'], { OTEL_SERVICE_NAME: 'config-invalid' });
  try {
    const u = await urls(agent);
    await agent.waitTraced(server.pid);
    writeAtomically(file, `exporter:\n  kind: jaeger\nselection:\n  includeExe: ["/elsewhere/**"]\n  excludeName: 7\n`);
    const rejected = (await agent.waitFor(/ERROR configuration reload rejected: the running configuration is kept file=\S+ generation=1 error=(.*)/, 5000))[1]!;
    assert.match(rejected, /exporter\.kind: expected one of otlp, console, none, got \\"jaeger\\"/);
    assert.match(rejected, /selection\.excludeName: expected a list, got 7/);
    const m = (await httpRequest(u.metrics)).body;
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="rejected"}'), 1);
    assert.equal(metric(m, 'gotrail_config_last_reload_successful'), 0);
    assert.equal(metric(m, 'gotrail_config_generation'), 1);
    const s = await status(u.status);
    assert.equal(s.config.generation, 1);
    assert.equal(s.config.lastReload?.result, 'rejected');
    assert.match(s.config.lastReload?.error ?? '', /exporter\.kind: expected one of otlp, console, none/);
    // the old rules and exporter still work
    assert.ok(s.processesTraced.some((p) => p.pid === server.pid));
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    await agent.waitFor(/GET {2}\/hello {2}SERVER {2}200 .*\[config-invalid pid \d+\]/, 10_000);
    // a setting the schema accepts but the agent cannot use is rejected too
    writeAtomically(file, `${good}  includePodLabel: ["=x"]\n`);
    await until('the second rejection', 5000, async () => (metric((await httpRequest(u.metrics)).body, 'gotrail_config_reloads_total{result="rejected"}') === 2 ? true : undefined));
    // the file fixed: applied, and the metric says so; a map size waits for a restart, said in the log and /status
    writeAtomically(file, good.replace('scheduleDelayMillis: 100', 'scheduleDelayMillis: 150') + 'maps: {maxInflight: 1024}\n');
    await until('the fixed file applied', 5000, async () => {
      const t = (await httpRequest(u.metrics)).body;
      return metric(t, 'gotrail_config_generation') === 2 && metric(t, 'gotrail_config_last_reload_successful') === 1 ? true : undefined;
    });
    await agent.waitFor(/WARN {2}configuration settings changed that take effect at the next start settings=mapSizes/, 5000);
    assert.deepEqual((await status(u.status)).config.pendingRestart, ['mapSizes']);
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a ConfigMap update (the ..data link swapped) is seen: exporter and sampling change without a restart; SIGHUP reloads', { skip: skipUnlessBpf() }, async () => {
  // the layout the kubelet makes for a mounted ConfigMap
  const vol = configDir();
  let n = 0;
  const publish = (text: string): void => {
    const stamp = `..2026_11_30_00_00_0${n++}`;
    mkdirSync(join(vol, stamp));
    writeFileSync(join(vol, stamp, 'config.yaml'), text);
    symlinkSync(stamp, join(vol, '..data_tmp'));
    renameSync(join(vol, '..data_tmp'), join(vol, '..data'));
    if (n > 1) rmSync(join(vol, `..2026_11_30_00_00_0${n - 2}`), { recursive: true });
  };
  const base = `selection:\n  includeExe: [${JSON.stringify(bin)}]\n`;
  publish(`${base}exporter:\n  kind: none\n`);
  symlinkSync('..data/config.yaml', join(vol, 'config.yaml'));
  const file = join(vol, 'config.yaml');
  const agent = await startAgent(['--config', file]);
  const server = await startGoServer(bin, ['-tag', 'config-map'], { OTEL_SERVICE_NAME: 'config-map' });
  try {
    const u = await urls(agent);
    await agent.waitTraced(server.pid);
    assert.match(agent.log(), /gotrail running exporter=none /);

    publish(`${base}exporter:\n  kind: console\n  batch: {scheduleDelayMillis: 100}\n`);
    await agent.waitFor(/configuration reloaded file=\S+ generation=2 /, 5000);
    assert.equal((await status(u.status)).config.sources['export.exporter'], 'config file');
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    await agent.waitFor(/GET {2}\/hello {2}SERVER {2}200 .*\[config-map pid \d+\]/, 10_000);

    // sampling: no trace kept; every span is counted, none printed
    publish(`${base}exporter:\n  kind: console\n  batch: {scheduleDelayMillis: 100}\nsampling:\n  sampler: always_off\n`);
    await agent.waitFor(/configuration reloaded file=\S+ generation=3 /, 5000);
    const before = metric((await httpRequest(u.metrics)).body, 'gotrail_spans_not_sampled_total{decided_by="sampler"}');
    assert.equal(before, 0);
    const N = 20;
    for (let i = 0; i < N; i++) assert.equal((await httpRequest(`${server.url}/status/201`)).status, 201);
    await until(`${N} spans sampled out`, 10_000, async () => (metric((await httpRequest(u.metrics)).body, 'gotrail_spans_not_sampled_total{decided_by="sampler"}') >= N ? true : undefined));
    await new Promise((r) => setTimeout(r, 500)); // past the batch delay: a kept span would be printed by now
    assert.equal(metric((await httpRequest(u.metrics)).body, 'gotrail_spans_not_sampled_total{decided_by="sampler"}'), N);
    assert.doesNotMatch(agent.log(), /\/status\/201 {2}SERVER/);

    // SIGHUP with the same content: reported as unchanged, nothing re-applied
    agent.child.kill('SIGHUP');
    await agent.waitFor(/configuration unchanged file=\S+ generation=3 trigger=SIGHUP/, 5000);
    const m = (await httpRequest(u.metrics)).body;
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="unchanged"}'), 1);
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="applied"}'), 2);
    assert.equal(metric(m, 'gotrail_config_reloads_total{result="rejected"}'), 0);
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(vol, { recursive: true, force: true });
  }
});

test('/healthz says alive; /readyz is 503 while the exporter fails and 200 once a reload points it at a working one', { skip: skipUnlessBpf() }, async () => {
  const dir = configDir();
  const file = join(dir, 'config.yaml');
  const sel = `selection:\n  includeExe: [${JSON.stringify(bin)}]\n`;
  // port 9 (discard) on loopback: nothing listens, every export fails at once
  writeFileSync(file, `${sel}exporter:\n  kind: otlp\n  otlp: {endpoint: "http://127.0.0.1:9/v1/traces"}\n  batch: {scheduleDelayMillis: 100, exportTimeoutMillis: 2000}\n`);
  const agent = await startAgent(['--config', file]);
  const server = await startGoServer(bin, ['-tag', 'config-ready'], { OTEL_SERVICE_NAME: 'config-ready' });
  try {
    const u = await urls(agent);
    const live = await httpRequest(u.healthz);
    assert.equal(live.status, 200);
    const ready = await httpRequest(u.readyz);
    assert.equal(ready.status, 200, ready.body);
    assert.match(ready.body, /^ready: /);
    await agent.waitTraced(server.pid);
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    const notReady = await until('/readyz 503', 15_000, async () => {
      const r = await httpRequest(u.readyz);
      return r.status === 503 ? r : undefined;
    });
    assert.match(notReady.body, /^not ready: exporter failing \(\d+ failed exports so far, 1 spans queued\)/);
    assert.equal((await httpRequest(u.healthz)).status, 200, 'alive while the exporter fails');
    writeAtomically(file, `${sel}exporter:\n  kind: none\n`);
    await until('/readyz 200 after the reload', 5000, async () => ((await httpRequest(u.readyz)).status === 200 ? true : undefined));
    // the queued span went to the new exporter
    await until('the queued span exported', 5000, async () => (metric((await httpRequest(u.metrics)).body, 'gotrail_spans_exported_total') === 1 ? true : undefined));
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without --config, SIGHUP (a service manager\'s reload) leaves the agent running and /status says where the settings come from', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent(['--exporter', 'none', '--include-exe', '/nonexistent/**']);
  try {
    const u = await urls(agent);
    agent.child.kill('SIGHUP');
    await agent.waitFor(/reload asked, but the configuration comes from flags and environment only \(no --config\): nothing to reload trigger=SIGHUP/, 5000);
    const s = await status(u.status);
    assert.equal(s.config.source, 'flags and environment');
    assert.equal(s.config.path, undefined);
    assert.equal(s.config.generation, 1);
    assert.equal(s.config.sources['export.exporter'], '--exporter');
    assert.equal(s.config.sources['selection.includeExe'], '--include-exe');
    assert.equal((await httpRequest(u.readyz)).status, 200);
  } finally {
    assert.equal(await agent.stop(), 0, `gotrail run exits 0 on SIGTERM after a SIGHUP:\n${agent.log().slice(-3000)}`);
  }
});

test('a configuration read from a pipe (--config <(…)) or a FIFO is read once: neither read again at start (a pipe read again is empty, every setting back to its default) nor on SIGHUP', { skip: skipUnlessBpf() }, async () => {
  const text = 'exporter: {kind: none}\nsampling: {sampler: always_off}\n';
  const dir = configDir();
  const fifo = join(dir, 'config.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  try {
    for (const how of ['a pipe', 'a FIFO'] as const) {
      let command: string[];
      if (how === 'a pipe') {
        // as a shell gives it: /dev/fd/63, a pipe whose writer has exited by the time the agent runs
        command = ['bash', '-c', 'exec "$0" "$@" --config <(printf "%s" "$GOTRAIL_TEST_CONFIG")', gotrailBin];
      } else {
        // one writer: what the agent reads at start
        spawn('sh', ['-c', 'printf "%s" "$GOTRAIL_TEST_CONFIG" > "$1"', 'sh', fifo], { env: { ...process.env, GOTRAIL_TEST_CONFIG: text }, stdio: 'ignore' });
        command = ['bash', '-c', 'exec "$0" "$@" --config "$GOTRAIL_TEST_FIFO"', gotrailBin];
      }
      const agent = await startAgent(['--include-exe', '/nonexistent/**'], { GOTRAIL_TEST_CONFIG: text, GOTRAIL_TEST_FIFO: fifo }, { command });
      try {
        const u = await urls(agent);
        const check = async (when: string): Promise<void> => {
          const s = await status(u.status);
          assert.equal(s.config.source, 'file', `${how}, ${when}`);
          assert.equal(s.config.generation, 1, `${how}, ${when}: the configuration read at start is the one running`);
          assert.equal(s.config.sources['export.exporter'], 'config file', `${how}, ${when}`);
          assert.equal(s.config.sources['sampling.sampler'], 'config file', `${how}, ${when}`);
        };
        await check('at start');
        agent.child.kill('SIGHUP');
        await agent.waitFor(new RegExp(`reload asked, but the configuration was read from ${how}, which cannot be read again: nothing to reload \\(restart to change it\\)`), 5000);
        await check('after SIGHUP');
        assert.equal((await httpRequest(u.healthz)).status, 200);
      } finally {
        assert.equal(await agent.stop(), 0, `${how}: gotrail run exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
