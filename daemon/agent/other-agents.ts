/**
 * Other gotrail agents on this node. Two agents both attach their probes to
 * every Go binary they select: each request then makes two traces, one per
 * agent, and every probe hit costs its trap twice. Nothing forbids it (a test
 * agent beside a production one), so it is said, not refused.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * Pids of other processes running `gotrail run`: Node (`node…` as the
 * command) given `…daemon/cli/main.ts run` or the bundle set-up builds,
 * `…build/agent/main.mjs run` (what the launcher, the systemd unit and the
 * image start, deploy/bundle.ts). Processes
 * that vanish or cannot be read are skipped.
 * @param procRoot  /proc (another root for tests)
 * @param self  this agent's pid, left out
 */
export function otherAgents(procRoot = '/proc', self = process.pid): number[] {
  const found: number[] = [];
  let names: string[];
  try {
    names = readdirSync(procRoot);
  } catch {
    return found;
  }
  for (const name of names) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0 || pid === self) continue;
    let args: string[];
    try {
      args = readFileSync(`${procRoot}/${name}/cmdline`, 'latin1').split('\0');
    } catch {
      continue;
    }
    const main = args.findIndex((a) => /(^|\/)(daemon\/cli\/main\.ts|build\/agent\/main\.mjs)$/.test(a));
    if (main > 0 && /^node/.test(basename(args[0]!)) && args[main + 1] === 'run') found.push(pid);
  }
  return found.sort((a, b) => a - b);
}
