/**
 * The premise of the lockdown-safe HTTP/2 injection design
 * (docs/cross-node-propagation.md, "HTTP/2 and gRPC"), checked with Go's own
 * HTTP/2 client and server: appending a literal header field without
 * indexing at the end of each client HEADERS frame (END_HEADERS, not
 * PADDED) and fixing the frame length — the byte change an sk_msg program
 * would make — leaves every request of a shared connection well-formed with
 * exactly one traceparent, while HPACK's dynamic table is in use. No BPF:
 * a relay in the program makes the change (test/programs/h2-append).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';

test('a traceparent appended to HTTP/2 HEADERS frames: 100 concurrent requests on one connection, each with it exactly once', () => {
  const out = execFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'h2-append'), ['-n', '100'], { encoding: 'utf8', timeout: 60_000 });
  const r = JSON.parse(out) as { requests: number; ok: number; withOne: number; frames: number; skipped: number };
  assert.deepEqual(r, { requests: 100, ok: 100, withOne: 100, frames: 100, skipped: 0 });
});
