/**
 * Runs `gotrail run` as a child process, the way a user runs it, and follows
 * its log to know when a process is traced.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const gotrailBin = join(repoRoot, 'daemon', 'bin', 'gotrail');

export interface AgentProcess {
  child: ChildProcess;
  log(): string;
  metricsUrl(): Promise<string>;
  waitTraced(pid: number, timeoutMs?: number): Promise<void>;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  stop(): Promise<number | null>;
}

/**
 * Agents started and not exited yet: killed should the test process exit
 * first. One `exit` listener serves them all (one each passed Node's
 * default of 10 listeners in a long test file, with a warning).
 */
const running = new Set<ChildProcess>();
const killRunning = (): void => {
  for (const c of running) c.kill('SIGKILL');
};

/** How long a start may take before the agent is stopped and the start failed (ms). */
export const DEFAULT_START_TIMEOUT_MS = 30_000;

/**
 * Starts `gotrail run` and waits for its `gotrail running` line. A start that
 * fails (the agent exits, or is not running within `opts.startTimeoutMs`)
 * stops the agent (SIGTERM, SIGKILL 5 s later) before it throws: a test that
 * fails never leaves an agent behind.
 * @param opts.command  the command that is `gotrail` (default: daemon/bin/gotrail),
 *   e.g. the image's entrypoint run in its root filesystem; `run` and the flags follow it.
 * @param opts.startTimeoutMs  how long the start may take (default {@link DEFAULT_START_TIMEOUT_MS})
 */
export async function startAgent(args: string[], env: Record<string, string> = {}, opts: { command?: string[]; startTimeoutMs?: number } = {}): Promise<AgentProcess> {
  const [exe, ...pre] = opts.command ?? [gotrailBin];
  const child = spawn(exe!, [...pre, 'run', '--metrics-address', '127.0.0.1:0', '--scan-interval', '200', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer): void => {
    text += d.toString();
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let exited: number | null | undefined;
  if (!process.listeners('exit').includes(killRunning)) process.on('exit', killRunning);
  running.add(child);
  const exitP = new Promise<number | null>((r) => child.once('exit', (code) => {
    exited = code;
    running.delete(child);
    for (const w of waiters.splice(0)) w();
    r(code);
  }));
  const waitFor = async (re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(text);
      if (m) return m;
      if (exited !== undefined) throw new Error(`gotrail exited (code ${exited}) before ${re}:\n${text}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${re} in gotrail's log:\n${text.slice(-4000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  const stop = async (killAfterMs: number): Promise<number | null> => {
    if (exited === undefined) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const code = await exitP;
    clearTimeout(t);
    return code;
  };
  try {
    await waitFor(/gotrail running/, opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  } catch (e) {
    await stop(5_000);
    throw e;
  }
  return {
    child,
    log: () => text,
    metricsUrl: async () => (await waitFor(/metrics served url=(\S+)/))[1]!,
    waitTraced: async (pid, timeoutMs) => void (await waitFor(new RegExp(`tracing process pid=${pid}\\b`), timeoutMs)),
    waitFor,
    stop: () => stop(15_000),
  };
}
