/**
 * Tests that load BPF need root and a kernel with BTF; elsewhere they skip
 * and say why (CI runs as root, so there they run).
 */
import { existsSync } from 'node:fs';

export function skipUnlessBpf(): string | false {
  if (process.platform !== 'linux') return 'needs Linux (eBPF)';
  if (process.getuid?.() !== 0) return 'needs root to load eBPF programs (run the tests as root)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'needs a kernel with BTF (/sys/kernel/btf/vmlinux)';
  return false;
}
