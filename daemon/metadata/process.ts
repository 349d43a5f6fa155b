/**
 * The facts about a process that discovery does not need but selection rules
 * and resources do: command line, environment, container, pod. Each is read
 * from /proc on first use and kept for the life of the process (a pid is
 * told from its successor by its start time), so the rules read only what
 * they look at and the resource reuses what the rules read.
 *
 * When pods change, the processes of those pods are reported through
 * {@link ProcessMetadata.onRefresh}, so that the agent can decide again on
 * processes that were waiting for their pod and rebuild the resources of
 * those it traces.
 */
import { readFileSync } from 'node:fs';
import type { Attributes } from '@opentelemetry/api';
import type { ProcessIdentity } from '../agent/selection.ts';
import { readProcessEnv } from '../spans/resource.ts';
import { readContainerInfo, type ContainerInfo } from './container.ts';
import { kubernetesAttributes, type PodLookup } from './kubernetes-attributes.ts';
import type { PodChange } from './kubernetes.ts';

/** Where pods come from: the {@link PodWatcher}, or a test's stand-in. */
export interface PodSource {
  lookup(containerId: string | undefined, podUid?: string): PodLookup | undefined;
  onChange(listener: (c: PodChange) => void): () => void;
}

export interface ProcessMetadataOptions {
  /** Default `/proc`. */
  procRoot?: string;
  /**
   * How long a process in a Kubernetes pod waits for that pod's metadata
   * before the rules decide without it (and again when the pod arrives).
   * Default 30 000 ms.
   */
  podWaitMs?: number;
  /** Clock, for tests. Default `Date.now`. */
  now?: () => number;
}

interface Entry {
  startTime: string;
  firstSeen: number;
  cmdline?: string | null;
  env?: Map<string, string> | null;
  /** What the exec hook copied, for a process that is gone before /proc is read. */
  seeded?: { cmdline?: string; env?: Map<string, string> };
  container?: ContainerInfo | null;
  /** The last pod found: kept after the pod's deletion so the process's last spans are still named. */
  pod?: PodLookup;
}

/** /proc/PID/cmdline with its arguments joined by spaces; undefined when unreadable or empty (zombie). */
export function readCmdline(pid: number, procRoot = '/proc'): string | undefined {
  try {
    const args = readFileSync(`${procRoot}/${pid}/cmdline`, 'utf8').split('\0');
    if (args.at(-1) === '') args.pop();
    return args.length ? args.join(' ') : undefined;
  } catch {
    return undefined;
  }
}

export class ProcessMetadata {
  private readonly procRoot: string;
  private readonly podWaitMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<number, Entry>();
  private readonly listeners = new Set<(pids: number[]) => void>();
  private pods: PodSource | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(opts: ProcessMetadataOptions = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.podWaitMs = opts.podWaitMs ?? 30_000;
    this.now = opts.now ?? Date.now;
  }

  /** Where pod metadata comes from; undefined outside Kubernetes. */
  setPodSource(pods: PodSource | undefined): void {
    this.unsubscribe?.();
    this.pods = pods;
    this.unsubscribe = pods?.onChange((c) => this.podChanged(c));
  }

  /** Called with the pids (known here) of pods that were added, modified or deleted. */
  onRefresh(listener: (pids: number[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** What the selection rules may ask about a process; every fact is read on first use. */
  identity(p: { pid: number; exe: string; name: string; startTime: string }): ProcessIdentity {
    this.entry(p.pid, p.startTime);
    return {
      pid: p.pid,
      exe: p.exe,
      name: p.name,
      cmdline: () => this.cmdline(p.pid),
      env: () => this.env(p.pid),
      containerId: () => this.container(p.pid)?.containerId,
      pod: () => {
        const pod = this.pod(p.pid);
        return pod === 'pending' || pod === undefined ? pod : { namespace: pod['k8s.namespace.name'], labels: pod.labels };
      },
    };
  }

  cmdline(pid: number): string | undefined {
    const e = this.entry(pid);
    if (e.cmdline === undefined) e.cmdline = readCmdline(pid, this.procRoot) ?? e.seeded?.cmdline ?? null;
    return e.cmdline ?? undefined;
  }

  env(pid: number): Map<string, string> | undefined {
    const e = this.entry(pid);
    if (e.env === undefined) e.env = readProcessEnv(pid, this.procRoot) ?? e.seeded?.env ?? null;
    return e.env ?? undefined;
  }

  /**
   * Keeps the command line and environment the exec hook copied (a bounded
   * prefix of each), used only when /proc can no longer be read: a process
   * that exited before the agent looked is judged by its own facts.
   */
  seed(pid: number, startTime: string, facts: { cmdline?: string; env?: Map<string, string> }): void {
    this.entry(pid, startTime).seeded = facts;
  }

  container(pid: number): ContainerInfo | undefined {
    const e = this.entry(pid);
    if (e.container === undefined) e.container = readContainerInfo(pid, this.procRoot) ?? null;
    return e.container ?? undefined;
  }

  /**
   * The process's pod: undefined outside Kubernetes (no pod source, no
   * container, or a container that is not a pod's); `'pending'` while the pod
   * named by the cgroup path is not known, for at most `podWaitMs`.
   */
  pod(pid: number): PodLookup | 'pending' | undefined {
    if (!this.pods) return undefined;
    const e = this.entry(pid);
    const c = this.container(pid);
    if (!c) return undefined;
    const found = this.pods.lookup(c.containerId, c.podUid);
    if (found) {
      e.pod = found;
      return found;
    }
    if (e.pod) return e.pod;
    if (!c.podUid) return undefined;
    return this.now() - e.firstSeen < this.podWaitMs ? 'pending' : undefined;
  }

  /** `container.*` and `k8s.*` resource attributes of a process. */
  resourceAttributes(pid: number): Attributes {
    const attrs: Attributes = {};
    const c = this.container(pid);
    if (c?.containerId) attrs['container.id'] = c.containerId;
    if (c?.runtime) attrs['container.runtime.name'] = c.runtime;
    const pod = this.pod(pid);
    if (pod && pod !== 'pending') Object.assign(attrs, kubernetesAttributes(pod));
    return attrs;
  }

  /** Drops what is known of a process: it exec'd another program (same pid, same start time, new facts). */
  forget(pid: number): void {
    this.entries.delete(pid);
  }

  /** Drops what is known of processes that are gone. */
  prune(alive: ReadonlySet<number>): void {
    for (const pid of this.entries.keys()) if (!alive.has(pid)) this.entries.delete(pid);
  }

  size(): number {
    return this.entries.size;
  }

  private entry(pid: number, startTime?: string): Entry {
    let e = this.entries.get(pid);
    if (!e || (startTime !== undefined && e.startTime !== startTime)) {
      e = { startTime: startTime ?? '', firstSeen: this.now() };
      this.entries.set(pid, e);
    }
    return e;
  }

  private podChanged(c: PodChange): void {
    const ids = new Set(c.containerIds);
    const uids = new Set(c.podUids);
    const pids: number[] = [];
    for (const [pid, e] of this.entries) {
      const ci = e.container;
      if (!ci) continue;
      if ((ci.containerId && ids.has(ci.containerId)) || (ci.podUid && uids.has(ci.podUid))) pids.push(pid);
    }
    if (pids.length === 0) return;
    for (const l of this.listeners) l(pids);
  }
}
