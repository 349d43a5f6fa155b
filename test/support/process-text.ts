/**
 * Compares the code a process runs with its executable file: every byte of
 * its executable mappings of that file, read through /proc/PID/mem (root).
 * A tracer may only differ from the file by its own breakpoints (0xCC at the
 * sites it attached right now); anything else is code the program never had.
 */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

export interface TextDifference {
  /** file offset */
  offset: number;
  file: number;
  memory: number;
}

export function textDifferences(pid: number, filePath: string, ino: bigint): TextDifference[] {
  const file = readFileSync(filePath);
  const out: TextDifference[] = [];
  const mem = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) r-xp ([0-9a-f]+) \S+ (\d+)/.exec(line);
      if (!m || BigInt(m[4]!) !== ino) continue;
      const start = parseInt(m[1]!, 16);
      const end = parseInt(m[2]!, 16);
      const off = parseInt(m[3]!, 16);
      const buf = Buffer.alloc(end - start);
      readSync(mem, buf, 0, buf.length, start);
      for (let i = 0; i < buf.length && off + i < file.length; i++) {
        if (buf[i] !== file[off + i]) out.push({ offset: off + i, file: file[off + i]!, memory: buf[i]! });
      }
    }
  } finally {
    closeSync(mem);
  }
  return out;
}
