/** Reading a binary's bytes at a file offset (what uprobes take), for tests that check what sits at a probe site. */
import { closeSync, openSync, readSync } from 'node:fs';

/** `n` bytes of file `path` at file offset `offset` (fewer at the file's end). */
export function bytesAt(path: string, offset: number, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, offset);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}
