/**
 * One executable file as both sides see it. User space stats a descriptor
 * (`st_dev` in glibc's encoding, times in ns); the exec hook reads the inode
 * (`s_dev` in the kernel's encoding, major << 20 | minor; seconds and
 * nanoseconds). Both name the same inode and the same content, so the exec
 * hook can tell a known file from one rewritten in place.
 *
 * Limits: filesystems whose `stat` reports a device other than the
 * superblock's (btrfs subvolumes, overlayfs) never match, so their processes
 * take the user-space path (found by their exec event, attached after
 * analysis), and a rewrite in place is caught by the content check in user
 * space and the file watcher instead of at exec.
 */
import type { FileInfo, FileKey } from '../generated/layouts.ts';
import type { BinaryKey } from './attachments.ts';

const NS = 1_000_000_000n;

/** glibc's st_dev → the kernel's internal dev_t. */
export function kernelDev(stDev: bigint): bigint {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn & 0xffffffffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn & 0xffffffffn);
  return (major << 20n) | minor;
}

/** The kernel's internal dev_t → glibc's st_dev. */
export function userDev(kdev: bigint): bigint {
  const major = kdev >> 20n;
  const minor = kdev & 0xfffffn;
  return (minor & 0xffn) | ((major & 0xfffn) << 8n) | ((minor & ~0xffn) << 12n) | ((major & ~0xfffn) << 32n);
}

/** The map key of a stat()ed file. */
export function fileKeyOf(k: BinaryKey): FileKey {
  return { dev: kernelDev(k.dev), ino: k.ino };
}

/** The content identity of a stat()ed file, as the exec hook compares it. */
export function fileInfoOf(k: BinaryKey, binaryId: number, flags: number): FileInfo {
  const m = k.mtimeNs ?? 0n;
  const c = k.ctimeNs ?? 0n;
  return {
    size: k.size ?? 0n,
    mtime_sec: m / NS, mtime_nsec: Number(m % NS),
    ctime_sec: c / NS, ctime_nsec: Number(c % NS),
    binary_id: binaryId, flags,
  };
}

/** The stat()-style key of the file an exec event names. */
export function binaryKeyOf(file: FileKey, content: FileInfo): BinaryKey {
  return {
    dev: userDev(file.dev), ino: file.ino,
    mtimeNs: content.mtime_sec * NS + BigInt(content.mtime_nsec),
    ctimeNs: content.ctime_sec * NS + BigInt(content.ctime_nsec),
    size: content.size,
  };
}
