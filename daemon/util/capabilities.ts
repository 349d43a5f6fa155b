/**
 * This process's effective capabilities, as /proc/self/status gives them
 * (`CapEff`, a hexadecimal bit set; bit numbers from linux/capability.h).
 */
import { readFileSync } from 'node:fs';

export const CAP_SYS_PTRACE = 19n;
export const CAP_SYS_ADMIN = 21n;
export const CAP_BPF = 39n;

/** The effective capability set of this process, or undefined when it cannot be read. */
export function effectiveCapabilities(): bigint | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether this process has capability `cap` in effect; undefined when unknown. */
export function hasCapability(cap: bigint, caps = effectiveCapabilities()): boolean | undefined {
  return caps === undefined ? undefined : ((caps >> cap) & 1n) === 1n;
}
