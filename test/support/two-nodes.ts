/**
 * Two "nodes" on this machine: network namespaces A and B joined by a veth
 * pair, with addresses from 198.18.N/24 and 198.19.N/24 (ranges set aside
 * for benchmarking, RFC 2544), so the tests reach only hosts they made.
 * Namespace A's /etc/hosts (`ip netns exec` binds /etc/netns/<ns>/hosts)
 * names B's addresses as the test asks.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TwoNodes {
  /** namespace names */
  nsA: string;
  nsB: string;
  /** A's address on 198.18.N/24 */
  a: string;
  /** B's first address on 198.18.N/24; `bOn(k)` gives 198.18.N.k */
  b: string;
  bOn(k: number): string;
  /** B's address on 198.19.N/24 (another subnet, for CIDR rules) */
  bOutside: string;
  /** 198.18.N.0/24 */
  subnet: string;
  /** Creates the namespaces (removing leftovers first). @throws Error of `ip` when one step fails */
  setup(hosts?: Record<string, string>): void;
  /** Removes them; never throws. */
  teardown(): void;
}

/** `prefix` names the namespaces (with this process's pid); `n` picks the /24s. B holds .2 to .(1 + bAddresses). */
export function twoNodes(prefix: string, n: number, bAddresses = 3): TwoNodes {
  const nsA = `${prefix}${process.pid}a`;
  const nsB = `${prefix}${process.pid}b`;
  const bOn = (k: number): string => `198.18.${n}.${k}`;
  const sh = (...args: string[]): void => void execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const nodes: TwoNodes = {
    nsA, nsB, a: bOn(1), b: bOn(2), bOn, bOutside: `198.19.${n}.2`, subnet: `198.18.${n}.0/24`,
    teardown() {
      for (const ns of [nsA, nsB]) {
        try {
          sh('ip', 'netns', 'del', ns);
        } catch {
          /* not there */
        }
        rmSync(join('/etc/netns', ns), { recursive: true, force: true });
      }
    },
    setup(hosts = {}) {
      nodes.teardown();
      sh('ip', 'netns', 'add', nsA);
      sh('ip', 'netns', 'add', nsB);
      sh('ip', 'link', 'add', `${nsA}v`, 'type', 'veth', 'peer', 'name', `${nsB}v`);
      sh('ip', 'link', 'set', `${nsA}v`, 'netns', nsA);
      sh('ip', 'link', 'set', `${nsB}v`, 'netns', nsB);
      const bAddrs = [...Array.from({ length: bAddresses }, (_, i) => `${bOn(2 + i)}/24`), `${nodes.bOutside}/24`];
      for (const [ns, addrs] of [[nsA, [`${nodes.a}/24`, `198.19.${n}.1/24`]], [nsB, bAddrs]] as const) {
        for (const a of addrs) sh('ip', '-n', ns, 'addr', 'add', a, 'dev', `${ns}v`);
        sh('ip', '-n', ns, 'link', 'set', `${ns}v`, 'up');
        sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
      }
      mkdirSync(join('/etc/netns', nsA), { recursive: true });
      writeFileSync(join('/etc/netns', nsA, 'hosts'), `127.0.0.1 localhost\n${Object.entries(hosts).map(([name, addr]) => `${addr} ${name}\n`).join('')}`);
    },
  };
  return nodes;
}
