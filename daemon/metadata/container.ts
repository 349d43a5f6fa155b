/**
 * Which container (and which Kubernetes pod) a process runs in, from its
 * cgroup path in /proc/PID/cgroup. Container runtimes name the cgroup of a
 * container after its 64-hex id, with a runtime-specific decoration:
 *
 * | runtime                       | cgroup path (innermost part)                          |
 * |-------------------------------|-------------------------------------------------------|
 * | Docker, cgroupfs driver       | `/docker/<id>`                                        |
 * | Docker, systemd driver        | `/system.slice/docker-<id>.scope`                     |
 * | containerd (CRI), systemd     | `/kubepods.slice/…/cri-containerd-<id>.scope`         |
 * | containerd / Docker, cgroupfs | `/kubepods/<qos>/pod<uid>/<id>`                       |
 * | CRI-O                         | `/kubepods.slice/…/crio-<id>.scope`                   |
 * | Podman                        | `…/libpod-<id>.scope[/container]`, `/libpod_parent/libpod-<id>` |
 * | nerdctl                       | `/nerdctl.slice/nerdctl-<id>.scope`                   |
 *
 * Path segments are read from the innermost outwards, so nested runtimes
 * (Docker in Docker) give the process's own container, and paths relative to
 * another cgroup namespace (`/../../kubepods-…`, as seen by an agent running in
 * a container without the host's cgroup namespace) still parse. The monitor
 * processes of CRI-O and Podman (`crio-conmon-<id>.scope`,
 * `libpod-conmon-<id>.scope`) run outside the container and are deliberately
 * not attributed to it.
 */
import { readFileSync } from 'node:fs';

export interface ContainerInfo {
  /** The container's id, 64 lowercase hex digits, when the process runs in a container. */
  containerId?: string;
  /** Known only when the cgroup path names it (`docker`, `containerd`, `cri-o`, `podman`). */
  runtime?: string;
  /**
   * The Kubernetes pod UID from a kubepods path, dashes restored (systemd slice
   * names carry `_`). Static pods carry the kubelet's 32-hex config hash
   * instead, which the API server shows as the mirror pod's
   * `kubernetes.io/config.mirror` annotation.
   */
  podUid?: string;
}

const RUNTIME_OF_PREFIX: Record<string, string> = {
  docker: 'docker',
  'cri-containerd': 'containerd',
  nerdctl: 'containerd',
  crio: 'cri-o',
  libpod: 'podman',
};

const CONTAINER_SEGMENT = /^(?:(docker|cri-containerd|nerdctl|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$/;
const POD_SEGMENT = /(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$/;

/** Container facts from one cgroup path (`/kubepods/…`), innermost segment first. */
export function parseCgroupPath(path: string): ContainerInfo | undefined {
  const segments = path.split('/');
  let containerId: string | undefined;
  let runtime: string | undefined;
  let podUid: string | undefined;
  for (let i = segments.length - 1; i >= 0; i--) {
    const seg = segments[i]!;
    if (containerId === undefined) {
      const m = CONTAINER_SEGMENT.exec(seg);
      if (m) {
        containerId = m[2];
        runtime = m[1] ? RUNTIME_OF_PREFIX[m[1]] : segments[i - 1] === 'docker' ? 'docker' : undefined;
        continue;
      }
    }
    if (podUid === undefined) {
      const m = POD_SEGMENT.exec(seg);
      if (m) podUid = m[1]!.replaceAll('_', '-');
    }
  }
  if (containerId === undefined && podUid === undefined) return undefined;
  const out: ContainerInfo = {};
  if (containerId !== undefined) out.containerId = containerId;
  if (runtime !== undefined) out.runtime = runtime;
  if (podUid !== undefined) out.podUid = podUid;
  return out;
}

/**
 * Container facts from the text of /proc/PID/cgroup: `hierarchy:controllers:path`
 * lines, the cgroup v2 line being `0::path`. Under cgroup v2 there is only that
 * line; on hybrid hosts the v1 controllers may place a container where the v2
 * line says `/`, so the v2 line is preferred and the v1 lines are the fallback.
 * Undefined for a process in no container.
 */
export function parseCgroup(text: string): ContainerInfo | undefined {
  const paths: string[] = [];
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const path = line.slice(second + 1);
    if (line.startsWith('0::')) paths.unshift(path);
    else paths.push(path);
  }
  let best: ContainerInfo | undefined;
  for (const path of paths) {
    const info = parseCgroupPath(path);
    if (!info) continue;
    if (info.containerId !== undefined) return best?.podUid && !info.podUid ? { ...info, podUid: best.podUid } : info;
    best ??= info;
  }
  return best;
}

/** Container facts of a live process; undefined when it runs in no container or is gone. */
export function readContainerInfo(pid: number, procRoot = '/proc'): ContainerInfo | undefined {
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  return parseCgroup(text);
}

/**
 * A container id as the Kubernetes API or a user writes it: lowercase, without
 * the runtime scheme (`containerd://`, `docker://`, `cri-o://`).
 */
export function normalizeContainerId(id: string): string {
  const scheme = id.indexOf('://');
  return (scheme >= 0 ? id.slice(scheme + 3) : id).trim().toLowerCase();
}
