/**
 * Span and trace ids from a pooled CSPRNG buffer: one randomFillSync per 4096
 * ids instead of one per span.
 */
import { randomFillSync } from 'node:crypto';

const pool = Buffer.alloc(64 * 1024);
let pos = pool.length;

function take(n: number): Buffer {
  if (pos + n > pool.length) {
    randomFillSync(pool);
    pos = 0;
  }
  const b = pool.subarray(pos, pos + n);
  pos += n;
  return b;
}

function nonZeroHex(n: number): string {
  for (;;) {
    const hex = take(n).toString('hex');
    if (!/^0+$/.test(hex)) return hex;
  }
}

export const newSpanId = (): string => nonZeroHex(8);
export const newTraceId = (): string => nonZeroHex(16);
