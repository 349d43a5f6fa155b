// Fixtures of the native addon tests: builds the BPF test objects and the Go
// target program, finds function file offsets, drives the Go program and
// decodes ring-buffer batches. Everything is built under build/test-native/
// and rebuilt only when a source is newer than its output.

import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const fixturesDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const buildDir = join(repoRoot, 'build', 'test-native');
export const addonPath = join(repoRoot, 'daemon', 'native', 'build', 'Release', 'gotrail_native.node');

const goCandidates = [process.env['GO'], '/usr/local/go/bin/go', 'go'];

function which(cmd: string): boolean {
  if (cmd.includes('/')) return existsSync(cmd);
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function goBinary(): string | undefined {
  return goCandidates.find((c): c is string => c !== undefined && which(c));
}

/** Why these tests cannot run here, or undefined when they can. */
export function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'eBPF tests need Linux';
  if (process.getuid?.() !== 0) return 'eBPF tests need root (run as root)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'eBPF tests need kernel BTF (/sys/kernel/btf/vmlinux)';
  if (!existsSync(addonPath)) return 'native addon not built: run bash deploy/setup.sh';
  for (const tool of ['clang', 'bpftool']) if (!which(tool)) return `${tool} not found`;
  if (goBinary() === undefined) return 'no Go toolchain found (set GO=/path/to/go)';
  return undefined;
}

function newer(src: string[], out: string): boolean {
  if (!existsSync(out)) return true;
  const outTime = statSync(out).mtimeMs;
  return src.some((s) => statSync(s).mtimeMs > outTime);
}

export interface Fixtures {
  /** addon_fixture.bpf.o: ring buffer, maps, uprobe/tracepoint programs. */
  object: string;
  /** bad_fixture.bpf.o: one program the verifier refuses. */
  badObject: string;
  /** The Go program; see fixtures/worker/main.go. */
  worker: string;
}

let built: Fixtures | undefined;

/** Builds (when stale) and returns the fixture paths. Synchronous, cached. */
export function buildFixtures(): Fixtures {
  if (built) return built;
  mkdirSync(buildDir, { recursive: true });
  const vmlinux = join(buildDir, 'vmlinux.h');
  if (!existsSync(vmlinux)) {
    const header = execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'c'], {
      maxBuffer: 64 << 20,
    });
    writeFileSync(vmlinux, header);
  }
  const bpf = (name: string): string => {
    const src = join(fixturesDir, `${name}.bpf.c`);
    const out = join(buildDir, `${name}.bpf.o`);
    if (newer([src, vmlinux], out)) {
      execFileSync('clang', ['-target', 'bpf', '-O2', '-g', '-Wall', '-I', buildDir, '-c', src, '-o', out], {
        stdio: ['ignore', 'inherit', 'inherit'],
      });
    }
    return out;
  };
  const workerDir = join(fixturesDir, 'worker');
  const worker = join(buildDir, 'worker');
  const goSources = readdirSync(workerDir).map((f) => join(workerDir, f));
  if (newer(goSources, worker)) {
    const go = goBinary();
    if (go === undefined) throw new Error('no Go toolchain');
    execFileSync(go, ['build', '-buildvcs=false', '-o', worker, '.'], {
      cwd: workerDir,
      env: { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  }
  built = { object: bpf('addon_fixture'), badObject: bpf('bad_fixture'), worker };
  return built;
}

/**
 * File offset of a function symbol, from the ELF symbol table and program
 * headers: offset = vaddr - PT_LOAD.p_vaddr + PT_LOAD.p_offset. Just enough
 * ELF64 little-endian parsing for the test's own Go binary.
 */
export function symbolFileOffset(path: string, symbol: string): number {
  const elf = readFileSync(path);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    throw new Error(`${path}: not a 64-bit little-endian ELF file`);
  }
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);

  let vaddr: bigint | undefined;
  for (let i = 0; i < shnum && vaddr === undefined; i++) {
    const sh = shoff + i * shentsize;
    if (elf.readUInt32LE(sh + 4) !== 2 /* SHT_SYMTAB */) continue;
    const symOff = Number(elf.readBigUInt64LE(sh + 0x18));
    const symSize = Number(elf.readBigUInt64LE(sh + 0x20));
    const strIndex = elf.readUInt32LE(sh + 0x28);
    const strOff = Number(elf.readBigUInt64LE(shoff + strIndex * shentsize + 0x18));
    for (let s = symOff; s < symOff + symSize; s += 24) {
      const nameOff = strOff + elf.readUInt32LE(s);
      const end = elf.indexOf(0, nameOff);
      if (elf.toString('latin1', nameOff, end) === symbol) {
        vaddr = elf.readBigUInt64LE(s + 8);
        break;
      }
    }
  }
  if (vaddr === undefined) throw new Error(`${path}: no symbol ${symbol}`);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== 1 /* PT_LOAD */) continue;
    const pOffset = elf.readBigUInt64LE(ph + 0x08);
    const pVaddr = elf.readBigUInt64LE(ph + 0x10);
    const pMemsz = elf.readBigUInt64LE(ph + 0x28);
    if (vaddr >= pVaddr && vaddr < pVaddr + pMemsz) return Number(vaddr - pVaddr + pOffset);
  }
  throw new Error(`${path}: ${symbol} at 0x${vaddr.toString(16)} is in no PT_LOAD segment`);
}

/** The Go target: each run(n) calls Work n times and Other once. */
export class GoWorker {
  readonly child: ChildProcessWithoutNullStreams;
  readonly pid: number;
  readonly #lines: string[] = [];
  #wake: (() => void) | undefined;
  #exit: Promise<number | null>;

  constructor(path: string) {
    this.child = spawn(path, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    if (this.child.pid === undefined) throw new Error(`could not start ${path}`);
    this.pid = this.child.pid;
    this.#exit = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      this.#lines.push(line);
      this.#wake?.();
    });
  }

  /** Sends the request without waiting (the write itself is synchronous for pipes). */
  send(n: number): void {
    this.child.stdin.write(`${n}\n`);
  }

  /** Resolves with the sum printed once the worker has finished a request. */
  async done(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.#lines.length === 0) {
      if (Date.now() > deadline) throw new Error('Go worker did not answer');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    const line = this.#lines.shift() ?? '';
    if (!line.startsWith('done ')) throw new Error(`Go worker said: ${line}`);
    return line.slice(5);
  }

  async run(n: number): Promise<string> {
    this.send(n);
    return this.done();
  }

  async stop(): Promise<number | null> {
    this.child.stdin.end();
    return this.#exit;
  }
}

/** Splits a ring-buffer batch into record payloads, checking the framing. */
export function decodeBatch(batch: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < batch.length) {
    if (off % 8 !== 0) throw new Error(`frame at ${off} is not 8-byte aligned`);
    const len = batch.readUInt32LE(off);
    const end = off + 4 + len;
    if (end > batch.length) throw new Error(`frame at ${off} overruns the batch`);
    out.push(batch.subarray(off + 4, end));
    const next = (end + 7) & ~7;
    for (let i = end; i < next; i++) if (batch[i] !== 0) throw new Error(`non-zero padding at ${i}`);
    off = next;
  }
  if (off !== batch.length) throw new Error('batch ends inside padding');
  return out;
}

/** struct fixture_record in fixtures/addon_fixture.bpf.c. */
export interface FixtureRecord {
  cookie: bigint;
  tgid: number;
  seq: bigint;
}

export function decodeRecord(r: Buffer): FixtureRecord {
  if (r.length !== 24) throw new Error(`record of ${r.length} bytes, expected 24`);
  return { cookie: r.readBigUInt64LE(0), tgid: r.readUInt32LE(8), seq: r.readBigUInt64LE(16) };
}

/** Collects decoded records from onBatch. */
export class Collector {
  readonly records: FixtureRecord[] = [];
  readonly batchSizes: number[] = [];

  readonly onBatch = (batch: Buffer): void => {
    this.batchSizes.push(batch.length);
    for (const r of decodeBatch(batch)) this.records.push(decodeRecord(r));
  };

  async waitFor(count: number, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.records.length < count && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** A pid that names no process right now. */
export function unusedPid(): number {
  const max = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let pid = max - 1; pid > 1; pid--) if (!existsSync(`/proc/${pid}`)) return pid;
  throw new Error('no free pid');
}

/** Indexes of the `counters` map of fixtures/addon_fixture.bpf.c. */
export const Counter = {
  seqEvents: 0,
  fullEvents: 4,
  seqSide: 5,
  fullSide: 6,
  hitsEvents: 7,
  seqOdd: 8,
  fullOdd: 9,
} as const;

/** Reads one u64 of the fixture's `counters` map. */
export function readCounter(o: { mapLookup(name: string, key: Uint8Array): Buffer | null }, index: number): bigint {
  const v = o.mapLookup('counters', u32(index));
  if (v === null) throw new Error(`counters[${index}] missing`);
  return v.readBigUInt64LE();
}

/**
 * Blocks the JS thread (the event loop included) until `done()` holds,
 * looking every 2 ms; throws after `timeoutMs` so that a broken test fails
 * instead of hanging.
 */
export function blockUntil(done: () => boolean, what: string, timeoutMs = 60_000): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out (blocking) waiting for ${what}`);
    Atomics.wait(cell, 0, 0, 2);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Names of this process's threads that match `pattern` (from /proc/self/task/N/comm). */
export function threadNames(pattern: RegExp): string[] {
  const names: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const comm = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      if (pattern.test(comm)) names.push(comm);
    } catch {
      // the thread exited between the listing and the read
    }
  }
  return names.sort();
}

/** Index of the first seq that differs from its position (a gap, a duplicate or a reordering), or -1 when seqs are exactly 0..n-1. */
export function firstGap(seqs: bigint[]): number {
  for (let i = 0; i < seqs.length; i++) if (seqs[i] !== BigInt(i)) return i;
  return -1;
}
