/**
 * The Kubernetes facts gotrail attaches to a process, and how they are read
 * from a pod object: OpenTelemetry resource attributes (`k8s.*`) for the
 * namespace, pod, container and owning workload, plus the pod's labels for
 * the selection rules. The pod watcher (kubernetes.ts) keeps the records;
 * this module is the mapping alone, with no I/O.
 */
import { normalizeContainerId } from './container.ts';

export type OwnerKind = 'deployment' | 'replicaset' | 'statefulset' | 'daemonset' | 'job' | 'cronjob';
export type OwnerAttribute = `k8s.${OwnerKind}.${'name' | 'uid'}`;

/** What is known of the pod (and container) a process runs in; attribute names are OpenTelemetry's. */
export type PodLookup = {
  'k8s.namespace.name': string;
  'k8s.pod.name': string;
  'k8s.pod.uid': string;
  'k8s.node.name': string;
  /** Absent when the pod was found by UID only (container not started yet). */
  'k8s.container.name'?: string;
  /** The pod's labels (not resource attributes: they serve the selection rules). */
  labels: Readonly<Record<string, string>>;
} & Partial<Record<OwnerAttribute, string>>;

/** The resource attributes of a lookup (everything but the labels). */
export function kubernetesAttributes(l: PodLookup): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(l)) if (k !== 'labels' && typeof v === 'string') out[k] = v;
  return out;
}

export interface OwnerReference {
  kind?: string;
  name?: string;
  uid?: string;
  controller?: boolean;
}

/** The fields of a pod object we read; everything else is dropped on arrival. */
export interface PodObject {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: OwnerReference[];
  };
  status?: {
    containerStatuses?: ContainerStatus[];
    initContainerStatuses?: ContainerStatus[];
    ephemeralContainerStatuses?: ContainerStatus[];
  };
}

export interface ContainerStatus {
  name?: string;
  containerID?: string;
}

const OWNER_KINDS: Partial<Record<string, OwnerKind>> = { ReplicaSet: 'replicaset', StatefulSet: 'statefulset', DaemonSet: 'daemonset', Job: 'job' };

/** The CronJob controller names its Jobs `<cronjob>-<scheduled time in minutes since the epoch>`: 8 digits from 1979 to 2160. */
const CRONJOB_JOB_NAME = /^(.+)-(\d{8,})$/;

/**
 * Workload attributes from a pod's controller reference, without further API
 * calls (and so without RBAC on workloads):
 * - ReplicaSet `<deploy>-<hash>` with pod label `pod-template-hash=<hash>` →
 *   also Deployment `<deploy>` (the Deployment controller's naming; a bare
 *   ReplicaSet has no such label);
 * - Job `<name>-<8+ digits>` → also CronJob `<name>` (the CronJob controller's
 *   naming; a hand-made Job named that way would be taken for a CronJob's);
 * - StatefulSet, DaemonSet, Job, ReplicaSet → themselves, with their UID.
 * Static pods (owned by their Node) and bare pods get none.
 */
export function ownerAttributes(owners: readonly OwnerReference[] | undefined, labels: Readonly<Record<string, string>>): Partial<Record<OwnerAttribute, string>> {
  const ref = owners?.find((o) => o.controller) ?? owners?.[0];
  const out: Partial<Record<OwnerAttribute, string>> = {};
  if (!ref?.name || !ref.kind) return out;
  const kind = OWNER_KINDS[ref.kind];
  if (!kind) return out;
  out[`k8s.${kind}.name`] = ref.name;
  if (ref.uid) out[`k8s.${kind}.uid`] = ref.uid;
  if (kind === 'replicaset') {
    const hash = labels['pod-template-hash'];
    if (hash && ref.name.length > hash.length + 1 && ref.name.endsWith(`-${hash}`)) out['k8s.deployment.name'] = ref.name.slice(0, -hash.length - 1);
  } else if (kind === 'job') {
    const m = CRONJOB_JOB_NAME.exec(ref.name);
    if (m) out['k8s.cronjob.name'] = m[1]!;
  }
  return out;
}

/** What the watcher keeps of one pod. */
export interface PodRecord {
  uid: string;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  owner: Partial<Record<OwnerAttribute, string>>;
  /** container id → container name */
  containers: Map<string, string>;
  /** static pods: the kubelet's config hash, which is what the cgroup path carries */
  mirrorOf?: string;
  /** what lookups can observe; a change of anything else (status conditions) is not reported */
  signature: string;
}

/** The record of a pod object; undefined for one without UID or name. */
export function toRecord(o: PodObject): PodRecord | undefined {
  const md = o.metadata;
  if (!md?.uid || !md.name) return undefined;
  const labels = { ...(md.labels ?? {}) };
  const containers = new Map<string, string>();
  for (const list of [o.status?.containerStatuses, o.status?.initContainerStatuses, o.status?.ephemeralContainerStatuses]) {
    for (const c of list ?? []) {
      // empty until the container has been created
      if (c.containerID && c.name) containers.set(normalizeContainerId(c.containerID), c.name);
    }
  }
  const owner = ownerAttributes(md.ownerReferences, labels);
  const mirrorOf = md.annotations?.['kubernetes.io/config.mirror'];
  const rec: PodRecord = { uid: md.uid, namespace: md.namespace ?? 'default', name: md.name, labels, owner, containers, signature: '' };
  if (mirrorOf) rec.mirrorOf = mirrorOf;
  rec.signature = JSON.stringify([rec.namespace, rec.name, labels, owner, [...containers].sort(), mirrorOf]);
  return rec;
}

/** The UIDs a pod is found by: its own, and for a static (mirror) pod the config hash its cgroup carries. */
export function uidsOf(rec: PodRecord): string[] {
  return rec.mirrorOf ? [rec.uid, rec.mirrorOf] : [rec.uid];
}

/** The lookup answer for a pod on node `nodeName`, with the container's name when the process was found by container id. */
export function podLookup(pod: PodRecord, nodeName: string, container?: string): PodLookup {
  const out: PodLookup = {
    'k8s.namespace.name': pod.namespace,
    'k8s.pod.name': pod.name,
    'k8s.pod.uid': pod.uid,
    'k8s.node.name': nodeName,
    ...pod.owner,
    labels: pod.labels,
  };
  if (container) out['k8s.container.name'] = container;
  return out;
}
