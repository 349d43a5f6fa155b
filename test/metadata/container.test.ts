import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeContainerId, parseCgroup, readContainerInfo, type ContainerInfo } from '../../daemon/metadata/container.ts';

const ID = 'e9a9b2c5a7f1a1d0f2f86d3bdc1b9f1d2d7a4a0b6f2a1c3e8e5d7c9b0a1f2e3d';
const ID2 = '7c2b6f1e0d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c';
const UID = '2f9a6c0e-4b1d-4e9a-9c3f-1b7d5e8a0c2f';
const UID_ = UID.replaceAll('-', '_');

const cases: Array<{ name: string; cgroup: string; want: ContainerInfo | undefined }> = [
  {
    name: 'docker, cgroup v1, cgroupfs driver',
    cgroup: `12:pids:/docker/${ID}\n11:memory:/docker/${ID}\n2:cpu,cpuacct:/docker/${ID}\n1:name=systemd:/docker/${ID}\n0::/system.slice/containerd.service\n`,
    want: { containerId: ID, runtime: 'docker' },
  },
  {
    name: 'docker, cgroup v2, systemd driver',
    cgroup: `0::/system.slice/docker-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'docker' },
  },
  {
    name: 'docker in docker: the innermost container',
    cgroup: `0::/docker/${ID}/docker/${ID2}\n`,
    want: { containerId: ID2, runtime: 'docker' },
  },
  {
    name: 'containerd CRI, cgroup v2, systemd driver (burstable pod)',
    cgroup: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd', podUid: UID },
  },
  {
    name: 'containerd CRI, guaranteed pod (no QoS slice)',
    cgroup: `0::/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd', podUid: UID },
  },
  {
    name: 'kubernetes, cgroup v1, cgroupfs driver (containerd or dockershim)',
    cgroup: `11:cpuset:/kubepods/besteffort/pod${UID}/${ID}\n10:memory:/kubepods/besteffort/pod${UID}/${ID}\n1:name=systemd:/kubepods/besteffort/pod${UID}/${ID}\n`,
    want: { containerId: ID, podUid: UID },
  },
  {
    name: 'k3s, cgroup v2, cgroupfs driver',
    cgroup: `0::/kubepods/burstable/pod${UID}/${ID}\n`,
    want: { containerId: ID, podUid: UID },
  },
  {
    name: 'kind node (kubelet.slice nesting)',
    cgroup: `0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd', podUid: UID },
  },
  {
    name: 'seen from another cgroup namespace',
    cgroup: `0::/../../kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd', podUid: UID },
  },
  {
    name: 'CRI-O, cgroup v2',
    cgroup: `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'cri-o', podUid: UID },
  },
  {
    name: 'CRI-O conmon runs outside the container',
    cgroup: `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-conmon-${ID}.scope\n`,
    want: { podUid: UID },
  },
  {
    name: 'static pod: the kubelet config hash as pod id',
    cgroup: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c3b4b8e5d8a4f0e9c2a1b3c4d5e6f7a.slice/cri-containerd-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd', podUid: '0c3b4b8e5d8a4f0e9c2a1b3c4d5e6f7a' },
  },
  {
    name: 'podman rootless, cgroup v2 (container sub-cgroup)',
    cgroup: `0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container\n`,
    want: { containerId: ID, runtime: 'podman' },
  },
  {
    name: 'podman rootful, cgroup v2',
    cgroup: `0::/machine.slice/libpod-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'podman' },
  },
  {
    name: 'podman, cgroupfs manager',
    cgroup: `0::/libpod_parent/libpod-${ID}\n`,
    want: { containerId: ID, runtime: 'podman' },
  },
  {
    name: 'podman conmon runs outside the container',
    cgroup: `0::/machine.slice/libpod-conmon-${ID}.scope\n`,
    want: undefined,
  },
  {
    name: 'nerdctl',
    cgroup: `0::/nerdctl.slice/nerdctl-${ID}.scope\n`,
    want: { containerId: ID, runtime: 'containerd' },
  },
  {
    name: 'hybrid host: v2 line at the root, container on the v1 lines',
    cgroup: `5:memory:/docker/${ID}\n1:name=systemd:/docker/${ID}\n0::/\n`,
    want: { containerId: ID, runtime: 'docker' },
  },
  {
    name: 'ECS task (plain id under the task)',
    cgroup: `9:perf_event:/ecs/6f1b0b3b1d2a4b7f9c0d1e2f3a4b5c6d/${ID}\n`,
    want: { containerId: ID },
  },
  {
    name: 'host process under systemd',
    cgroup: '0::/system.slice/sshd.service\n',
    want: undefined,
  },
  {
    name: 'host process, user session',
    cgroup: '0::/user.slice/user-1000.slice/session-3.scope\n',
    want: undefined,
  },
  {
    name: 'a 32-hex cgroup name is not a container id',
    cgroup: '4:memory:/process_api/428d451ecaf5ec2b260c29250f79df66\n0::/\n',
    want: undefined,
  },
  {
    name: 'containerd service itself',
    cgroup: '0::/system.slice/containerd.service\n',
    want: undefined,
  },
  { name: 'empty', cgroup: '', want: undefined },
  { name: 'garbage', cgroup: 'not a cgroup file\n::\n', want: undefined },
];

for (const c of cases) {
  test(`cgroup: ${c.name}`, () => {
    assert.deepEqual(parseCgroup(c.cgroup), c.want);
  });
}

test('this machine: its own /proc/self/cgroup', () => {
  const text = readFileSync('/proc/self/cgroup', 'utf8');
  const info = readContainerInfo(process.pid);
  // a container cgroup always carries a 64-hex id; a cgroup namespace hides it
  if (!/[0-9a-f]{64}/.test(text)) {
    assert.equal(info, undefined, `no container id in:\n${text}`);
  } else {
    assert.ok(info?.containerId && text.includes(info.containerId), `container id from:\n${text}`);
  }
});

test('readContainerInfo reads /proc/PID/cgroup and tolerates a vanished process', () => {
  const root = mkdtempSync(join(tmpdir(), 'gotrail-cgroup-'));
  try {
    mkdirSync(join(root, '42'));
    writeFileSync(join(root, '42', 'cgroup'), `0::/system.slice/docker-${ID}.scope\n`);
    assert.deepEqual(readContainerInfo(42, root), { containerId: ID, runtime: 'docker' });
    assert.equal(readContainerInfo(43, root), undefined);
  } finally {
    rmSync(root, { recursive: true });
  }
});

test('normalizeContainerId strips the runtime scheme', () => {
  assert.equal(normalizeContainerId(`containerd://${ID}`), ID);
  assert.equal(normalizeContainerId(`docker://${ID.toUpperCase()}`), ID);
  assert.equal(normalizeContainerId(`cri-o://${ID}`), ID);
  assert.equal(normalizeContainerId(ID), ID);
});
