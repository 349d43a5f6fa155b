/**
 * The set-up end-to-end suites share: a real OpenTelemetry Collector and a
 * `gotrail run` exporting to it over OTLP/HTTP, started before a suite's
 * tests and stopped after them; what one traced process sent; and fresh
 * copies of the test server binary.
 *
 * ```ts
 * describe('…', { skip }, () => {
 *   const traced = tracedCollector(['--include-exe', join(copies, '**')]);
 *   test('…', async () => {
 *     const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain'));
 *     await traced.agent.waitTraced(server.pid);
 *     …
 *     const spans = await traced.serverSpans(server, 3);
 *   });
 * });
 * ```
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { attributeText, startCollector, type Collector, type ReceivedSpan, type SpanKindName } from './collector.ts';
import { startAgent, repoRoot, type AgentProcess } from './agent-process.ts';

/** How long spans of a process may take to reach the collector (ms). */
const ARRIVAL_MS = 20_000;
/** After the awaited spans came, how long to wait for any more (ms): a surplus span fails the count. */
const STRAGGLERS_MS = 1000;

export interface TracedCollector {
  /** The collector; set once the suite's `before` hook has run. */
  readonly collector: Collector;
  /** `gotrail run`, exporting to `collector`; set once the suite's `before` hook has run. */
  readonly agent: AgentProcess;
  /**
   * Exactly `n` spans of `kind` from process `pid`, after stragglers had time
   * to arrive; otherwise fails with `message`, what did arrive, the agent's
   * event and span counters and the tail of its log.
   */
  spansOf(pid: number, kind: SpanKindName, n: number, message: string): Promise<ReceivedSpan[]>;
  /** Exactly `n` SERVER spans of `server`'s process: `spansOf(server.pid, 'SERVER', n, 'one SERVER span per request')`. */
  serverSpans(server: { pid: number }, n: number): Promise<ReceivedSpan[]>;
  /** The first capture group of `re` in the agent's Prometheus metrics text, or undefined. */
  metric(re: RegExp): Promise<string | undefined>;
}

/**
 * Registers, in the enclosing `describe`, a `before` hook that starts a
 * collector and `gotrail run --exporter otlp` sending to it (with
 * `agentArgs`, e.g. its `--include-exe` rules, and `agentEnv` added to its
 * environment), and an `after` hook that stops both and asserts that
 * `gotrail run` exited 0 on SIGTERM.
 */
export function tracedCollector(agentArgs: string[], agentEnv: Record<string, string> = {}): TracedCollector {
  let collector: Collector | undefined;
  let agent: AgentProcess | undefined;

  before(async () => {
    collector = await startCollector();
    agent = await startAgent(['--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`, ...agentArgs], agentEnv);
  });

  after(async () => {
    const code = await agent?.stop();
    await collector?.stop();
    assert.equal(code, 0, 'gotrail run exits 0 on SIGTERM');
  });

  const started = <T>(what: T | undefined, name: string): T => {
    if (what === undefined) throw new Error(`${name} is not started: use it in a test of the describe that called tracedCollector()`);
    return what;
  };
  const metricsText = async (): Promise<string> => (await fetch(await started(agent, 'gotrail run').metricsUrl())).text();

  const fixture: TracedCollector = {
    get collector() {
      return started(collector, 'the collector');
    },
    get agent() {
      return started(agent, 'gotrail run');
    },
    async spansOf(pid, kind, n, message) {
      const mine = (all: ReceivedSpan[]): ReceivedSpan[] => all.filter((s) => s.resource['process.pid'] === pid && s.kind === kind);
      // a timeout is reported by the count below, with what did arrive
      await fixture.collector.waitForSpans((all) => mine(all).length >= n, ARRIVAL_MS).catch(() => undefined);
      await new Promise((r) => setTimeout(r, STRAGGLERS_MS));
      const spans = mine(await fixture.collector.spans());
      if (spans.length !== n) {
        const counters = (await metricsText()).split('\n').filter((l) => /^gotrail_(events|spans)/.test(l)).join('; ');
        const got = spans.map((s) => `${attributeText(s.attributes['url.path'] ?? s.attributes['url.full'])}<-${s.parentSpanId}`).join(', ');
        const log = fixture.agent.log().split('\n').filter((l) => !/process not selected/.test(l)).slice(-40).join('\n');
        assert.fail(`${message}: got ${spans.length} (${got}), expected ${n}; ${counters}\nagent log:\n${log}`);
      }
      return spans;
    },
    serverSpans: (server, n) => fixture.spansOf(server.pid, 'SERVER', n, 'one SERVER span per request'),
    metric: async (re) => re.exec(await metricsText())?.[1],
  };
  return fixture;
}

let copies = 0;
/**
 * A fresh copy, under `dir`, of the test program `build/go/<toolchain>/<variant>/<program>`;
 * returns its path. A binary whose last process exited is detached
 * asynchronously, and a process of the same file started meanwhile gets a
 * second link set; until the first is gone both fire (a return then finds
 * no entry). A file per test keeps each test to one link set, so that what
 * it asserts is the probe's work alone.
 */
export function freshCopy(dir: string, toolchain: string, variant: string, program = 'httpserver'): string {
  const copyDir = join(dir, `${toolchain}-${variant}-${copies++}`);
  mkdirSync(copyDir, { recursive: true });
  const dst = join(copyDir, program);
  copyFileSync(join(repoRoot, 'build', 'go', toolchain, variant, program), dst);
  return dst;
}
