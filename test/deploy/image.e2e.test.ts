/**
 * The container image built without a container engine (deploy/image/build.sh:
 * mmdebstrap + umoci, `make -f deploy/build.mk image`) runs the agent: the
 * OCI image is unpacked with umoci and its entrypoint is run in its root
 * filesystem as the DaemonSet runs it — root file system read-only, a tmpfs
 * /tmp, the host's /proc and /dev, a sysfs of its own with the host's
 * /sys/kernel/btf bound in (the DaemonSet's one host path: no securityfs,
 * tracefs or debugfs), only the eight named capabilities (setpriv from the
 * image) — against a traced Go program on the host, and a span of it
 * reaches a real collector.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { startCollector } from '../support/collector.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');
const layout = join(repoRoot, 'build', 'image', 'oci');
const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('deploy/Dockerfile and the engine-less build install the same runtime packages and entrypoint', () => {
  const dockerfile = readFileSync(join(repoRoot, 'deploy', 'Dockerfile'), 'utf8');
  const buildSh = readFileSync(join(repoRoot, 'deploy', 'image', 'build.sh'), 'utf8');
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('FROM '));
  const apt = /apt-get install -y --no-install-recommends\s+\\?\s*([^\\&]+)/.exec(runtime)![1]!.trim().split(/\s+/).sort();
  const packages = /^packages=\(([^)]*)\)$/m.exec(buildSh)![1]!.trim().split(/\s+/).sort();
  assert.deepEqual(apt, packages);
  assert.match(runtime, /^COPY --from=build \/opt\/gotrail \/opt\/gotrail$/m);
  assert.match(dockerfile, /deploy\/stage\.sh \/opt\/gotrail/);
  assert.match(runtime, /^ENTRYPOINT \["\/opt\/gotrail\/daemon\/bin\/gotrail"\]\nCMD \["run"\]$/m);
  assert.match(buildSh, /--config\.entrypoint \/opt\/gotrail\/daemon\/bin\/gotrail --config\.cmd run/);
});

const skip = skipUnlessBpf() || (spawnSync('umoci', ['--version']).status !== 0 ? 'needs umoci and mmdebstrap (Debian packages)' : false);

test('the engine-less image runs the agent from its root filesystem and a traced request arrives as a span', { skip, timeout: 900_000 }, async (t) => {
  // a no-op when the image is current; first build ~2 min (the Debian root filesystem is cached)
  sh('make', ['--no-print-directory', '-f', 'deploy/build.mk', 'image']);
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
  assert.ok(index.manifests.some((m) => m.annotations?.['org.opencontainers.image.ref.name'] === version), `tag ${version} in the OCI layout`);

  const dir = mkdtempSync(join(tmpdir(), 'gotrail-image-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${layout}:${version}`, bundle]);
  const rootfs = join(bundle, 'rootfs');
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { process: { args: string[]; cwd: string } };
  assert.deepEqual(config.process.args, ['/opt/gotrail/daemon/bin/gotrail', 'run'], 'entrypoint gotrail, command run');
  // runtime only: no compiler, no package manager, no sources of the addon
  for (const absent of ['usr/bin/clang', 'usr/bin/gcc', 'usr/bin/apt-get', 'usr/bin/make', 'opt/gotrail/daemon/native/src', 'opt/gotrail/node_modules/typescript']) {
    assert.ok(!existsSync(join(rootfs, absent)), `${absent} is not in the image`);
  }
  const [entrypoint, cmd] = config.process.args;

  // As a container runtime would: private mount namespace, the image's root
  // read-only, /tmp a tmpfs, a read-only sysfs of its own (nothing mounted
  // under it) with the DaemonSet's host path, /sys/kernel/btf, bound in
  // read-only, the DaemonSet's capabilities only (setpriv is the image's).
  const script = [
    'set -e',
    'r="$1"; shift',
    'mount --bind "$r" "$r"',
    'mount -t proc proc "$r/proc"',
    'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"',
    'mount --bind /sys/kernel/btf "$r/sys/kernel/btf"',
    'mount -o remount,bind,ro "$r/sys/kernel/btf"',
    'mount --rbind /dev "$r/dev"',
    'mount -t tmpfs -o size=16m tmpfs "$r/tmp"',
    'mount -o remount,bind,ro "$r"',
    'exec chroot "$r" /usr/bin/setpriv --inh-caps=-all --bounding-set=-all,+bpf,+perfmon,+sys_ptrace,+kill,+dac_read_search,+sys_resource,+net_admin,+sys_nice -- "$@"',
  ].join('\n');
  const collector = await startCollector();
  t.after(() => collector.stop());
  const server = await startGoServer(bin, ['-tag', 'image'], { OTEL_SERVICE_NAME: 'image-e2e' });
  t.after(() => server.stop());
  assert.equal(cmd, 'run');
  const agent = await startAgent(['--include-exe', bin], { OTEL_EXPORTER_OTLP_ENDPOINT: collector.otlpHttpEndpoint, OTEL_BSP_SCHEDULE_DELAY: '100' }, {
    command: ['unshare', '--mount', '--propagation', 'private', '--', 'bash', '-c', script, 'image-rootfs', rootfs, entrypoint!],
  });
  try {
    // the agent really runs from the image (its Node) with the eight capabilities only
    const pid = agent.child.pid!;
    assert.match(readlinkSync(`/proc/${pid}/exe`), /\/opt\/gotrail\/\.tools\/node\/bin\/node$/);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const caps = [2, 5, 12, 19, 23, 24, 38, 39].reduce((m, c) => m | (1n << BigInt(c)), 0n); // DAC_READ_SEARCH KILL NET_ADMIN SYS_PTRACE SYS_NICE SYS_RESOURCE PERFMON BPF
    const capSet = (name: string): bigint => BigInt('0x' + new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)![1]!);
    // exactly the eight, less any the host's own bounding set lacks (setpriv cannot add those)
    const hostBnd = BigInt('0x' + /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!);
    assert.equal(capSet('CapBnd'), caps & hostBnd, 'bounding set: the eight capabilities');
    assert.equal(capSet('CapEff') & ~caps, 0n, 'no effective capability outside them');
    const bpfPerfmon = (1n << 38n) | (1n << 39n);
    assert.equal(capSet('CapEff') & bpfPerfmon, bpfPerfmon, 'CAP_BPF and CAP_PERFMON effective');
    await agent.waitTraced(server.pid, 60_000);
    // without securityfs the lockdown mode is inferred from the verifier, not unknown
    assert.match(agent.log(), /probes loaded .*lockdown=(none|integrity|confidentiality)\b/);
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    const spans = await collector.waitForSpans((all) => all.some((s) => s.resource['process.pid'] === server.pid && s.kind === 'SERVER'), 30_000);
    const span = spans.find((s) => s.resource['process.pid'] === server.pid && s.kind === 'SERVER')!;
    assert.equal(span.resource['service.name'], 'image-e2e');
    assert.match(span.name, /GET/);
  } finally {
    assert.equal(await agent.stop(), 0, `gotrail (from the image) exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
  }
});
