/**
 * Keeps the machine's cores busy with other processes, as on a busy node:
 * the agent must keep up (or apply backpressure) while it shares the CPU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';

export interface BusyLoad {
  /** processes spinning */
  count: number;
  stop(): Promise<void>;
}

/** Starts `perCore` × the number of cores busy-looping shell processes (default 2 per core). */
export function startBusyLoad(perCore = 2): BusyLoad {
  const n = availableParallelism() * perCore;
  const children: ChildProcess[] = [];
  for (let i = 0; i < n; i++) children.push(spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
  const kill = (): void => {
    for (const c of children) c.kill('SIGKILL');
  };
  process.once('exit', kill);
  return {
    count: n,
    stop: async () => {
      await Promise.all(children.map((c) => new Promise<void>((r) => {
        if (c.exitCode !== null || c.signalCode !== null) return r();
        c.once('exit', () => r());
        c.kill('SIGKILL');
      })));
      process.off('exit', kill);
    },
  };
}
