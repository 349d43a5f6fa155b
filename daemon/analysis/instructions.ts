import { createRequire } from 'node:module';
import type * as Iced from 'iced-x86';

// Loaded by require, not import: importing a CommonJS module from ES modules
// reads its source twice (once to find its exports) and keeps both copies,
// 3.6 MiB of heap for iced-x86's 0.9 MB of generated glue. Loaded when first
// used and dropped by releaseInstructionDecoder() once the agent is quiet:
// its source, compiled WebAssembly and WebAssembly memory (~5 MiB resident)
// serve only binary analysis, which runs in bursts when binaries appear.
let iced: typeof Iced | undefined;
function ic(): typeof Iced {
  return (iced ??= createRequire(import.meta.url)('iced-x86') as typeof Iced);
}

/**
 * Lets the instruction decoder (iced-x86) be collected: the next analysis
 * loads it again (~20-50 ms). Call when no analysis is running; a later GC
 * frees it.
 */
export function releaseInstructionDecoder(): void {
  if (!iced) return;
  iced = undefined;
  const require = createRequire(import.meta.url);
  for (const k of Object.keys(require.cache)) if (k.includes('/node_modules/iced-x86/')) delete require.cache[k];
}
type Instruction = Iced.Instruction;
type Register = Iced.Register;

/** Offset of g.stackguard0, the bound the stack-growth check compares against. */
const STACKGUARD0 = 0x10n;
/** The check is at most a TLS load, four instructions and the branch. */
const PROLOGUE_MAX_INSTRUCTIONS = 8;

/**
 * Addresses of every near RET in `code`, decoded linearly from `address`
 * (Go emits no data inside function bodies, so a linear sweep is exact).
 */
export function retAddresses(code: Uint8Array, address: number): number[] {
  const { Mnemonic } = ic();
  const out: number[] = [];
  decode(code, address, Number.MAX_SAFE_INTEGER, (ins) => {
    if (ins.mnemonic === Mnemonic.Ret) out.push(Number(ins.ip));
    return true;
  });
  return out;
}

/**
 * Addresses of the instructions right after each direct near CALL to
 * `target` in `code` (decoded linearly from `address`): where the callee
 * has returned into this function.
 */
export function callReturnAddresses(code: Uint8Array, address: number, target: number): number[] {
  return directCalls(code, address, target).map((c) => c.next);
}

/**
 * Addresses of each direct near CALL (`E8 rel32`) to `target` in `code`
 * (decoded linearly from `address`). The kernel's x86 uprobe code emulates
 * such a CALL (one trap per hit, no single-step), and Go's register ABI has
 * put the callee's arguments in their registers there (RAX, RBX, RCX, ...).
 */
export function callAddresses(code: Uint8Array, address: number, target: number): number[] {
  return directCalls(code, address, target).map((c) => c.at);
}

function directCalls(code: Uint8Array, address: number, target: number): { at: number; next: number }[] {
  const { Mnemonic, OpKind } = ic();
  const out: { at: number; next: number }[] = [];
  decode(code, address, Number.MAX_SAFE_INTEGER, (ins) => {
    if (ins.mnemonic === Mnemonic.Call && ins.op0Kind === OpKind.NearBranch64 && Number(ins.nearBranchTarget) === target) out.push({ at: Number(ins.ip), next: Number(ins.nextIP) });
    return true;
  });
  return out;
}

/**
 * Address of the first instruction after the stack-growth check that Go
 * puts at the top of every function that may grow its stack:
 *
 *     CMP RSP, [g+0x10]                  ; small frames
 *     LEA R12, [RSP-N]; CMP R12, [g+0x10] ; frames up to 4 KiB
 *     MOV R12, RSP; SUB R12, N; JB more; CMP R12, [g+0x10] ; larger frames
 *     JBE morestack
 *
 * where g is R14 (ABIInternal, Go ≥ 1.17) or a register loaded from TLS
 * just before (ABI0 and older Go). `morestack` jumps back to the entry,
 * so a probe on the entry would fire twice for one call; past the check it
 * fires once. Functions without the check (NOSPLIT) return `address`.
 */
export function addressAfterStackCheck(code: Uint8Array, address: number): number {
  return scanStackCheck(code, address).after;
}

/**
 * Address of the `JBE morestack` of the stack-growth check (see
 * {@link addressAfterStackCheck}), or undefined for a function without the
 * check. A uprobe on a conditional branch is emulated by the kernel, where
 * one on most other instructions (the `SUB RSP, N` that follows the check
 * in Go before 1.21) is single-stepped out of line, a second trap per hit;
 * it fires again when morestack re-enters the function, so it suits only
 * probes for which a second hit is harmless.
 */
export function stackCheckBranch(code: Uint8Array, address: number): number | undefined {
  return scanStackCheck(code, address).branch;
}

/**
 * How the kernel runs the instruction under a uprobe's breakpoint once the
 * BPF program returned, which sets most of what a hit costs the traced
 * thread: `emulated` (the kernel computes the instruction's effect itself,
 * one trap per hit) or `single_stepped` (it runs a copy of the instruction
 * out of line with the trap flag set, a second trap, #DB, per hit; measured
 * on an Intel Xeon Firecracker VM, kernel 6.18: 0.5 against 16 µs per hit).
 */
export type TrapKind = 'emulated' | 'single_stepped';

/** Legacy prefixes (group 1-4) that may precede an x86-64 opcode. */
const LEGACY_PREFIXES = new Set([0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65]);

/**
 * Whether the kernel's x86 uprobe code emulates the instruction at the start
 * of `code` (decoded at `address`), so that a probe there costs one trap; any
 * other instruction is single-stepped out of line, a second trap per hit
 * (see {@link TrapKind}). From arch/x86/kernel/uprobes.c, which tries, in
 * arch_uprobe_analyze_insn:
 *
 * - branch_setup_xol_ops: JMP rel8/rel32 (EB, E9), CALL rel32 (E8), Jcc
 *   rel8/rel32 (70-7F, 0F 80-8F) without a 0x66 prefix (with one, the probe
 *   is refused), and NOPs: 0x90 and the long NOPL `0F 1F /0` (any NOP in
 *   recent kernels, insn_is_nop; in older ones only the kernel's own NOP
 *   byte sequences, x86_nops[], which are the forms Go's assembler emits).
 * - push_setup_xol_ops: PUSH of a 64-bit register, `50+r` or `41 50+r`
 *   (any other prefix, a PUSH of an immediate or of memory: single-stepped).
 *
 * Everything else takes default_xol_ops, the single-step: RET (C3, C2), an
 * indirect CALL or JMP through a register or memory (FF /2, FF /4), MOV,
 * SUB, CMP, LEA... A proposed kernel change (not in 6.18) would emulate
 * `MOV reg, reg` (REX.W 89 /r) too: a site classed single-stepped may then
 * cost less than the estimate says, never more.
 */
export function kernelEmulates(code: Uint8Array, address: number): boolean {
  const { Mnemonic } = ic();
  let p = 0;
  while (p < code.length && LEGACY_PREFIXES.has(code[p]!)) p++;
  const prefixes = code.subarray(0, p);
  const op = code[p];
  // PUSH r64: the kernel checks the bytes themselves (no prefix but REX.B alone)
  if (p === 0 && op !== undefined && op >= 0x50 && op <= 0x57) return true;
  if (p === 0 && op === 0x41 && code[1] !== undefined && code[1] >= 0x50 && code[1] <= 0x57) return true;
  let emulated = false;
  decode(code, address, 1, (ins) => {
    if (ins.mnemonic === Mnemonic.Nop) emulated = true; // 0x90 (not F3 90, PAUSE; not 41 90, XCHG), 0F 1F /0
    else if (ins.isJccShortOrNear || ins.isJmpShortOrNear || ins.isCallNear) emulated = !prefixes.includes(0x66);
    return false;
  });
  return emulated;
}

/** {@link TrapKind} of the instruction at the start of `code` (see {@link kernelEmulates}). */
export function trapKind(code: Uint8Array, address: number): TrapKind {
  return kernelEmulates(code, address) ? 'emulated' : 'single_stepped';
}

function scanStackCheck(code: Uint8Array, address: number): { after: number; branch?: number } {
  const { Mnemonic, OpKind, Register } = ic();
  let branch: number | undefined;
  let state: 'start' | 'compare' | 'branch' = 'start';
  let g: Register = Register.R14;
  let scratch: Register = Register.None;
  let result = address;
  decode(code, address, PROLOGUE_MAX_INSTRUCTIONS, (ins) => {
    if (state === 'start' && isTlsLoad(ins)) {
      g = ins.op0Register;
      return true;
    }
    if (state === 'start' || state === 'compare') {
      if (isGuardCompare(ins, g, state === 'start' ? Register.RSP : scratch)) {
        state = 'branch';
        return true;
      }
      if (state === 'start' && ins.mnemonic === Mnemonic.Lea && ins.op0Kind === OpKind.Register && ins.op1Kind === OpKind.Memory && ins.memoryBase === Register.RSP && ins.memoryIndex === Register.None) {
        scratch = ins.op0Register;
        state = 'compare';
        return true;
      }
      if (state === 'start' && ins.mnemonic === Mnemonic.Mov && ins.op0Kind === OpKind.Register && ins.op1Kind === OpKind.Register && ins.op1Register === Register.RSP) {
        scratch = ins.op0Register;
        state = 'compare';
        return true;
      }
      // The wrap-around check between computing SP-N and comparing it.
      if (state === 'compare' && scratch !== Register.None && ins.mnemonic === Mnemonic.Sub && ins.op0Kind === OpKind.Register && ins.op0Register === scratch) return true;
      if (state === 'compare' && ins.mnemonic === Mnemonic.Jb) return true;
      return false;
    }
    if (ins.mnemonic === Mnemonic.Jbe) {
      result = Number(ins.nextIP);
      branch = Number(ins.ip);
    }
    return false;
  });
  return branch === undefined ? { after: result } : { after: result, branch };
}

/** Loading g from thread-local storage: `MOV r, FS:[…]`, preceded in PIC code by loading the TLS offset `MOV r, [RIP+…]`. */
function isTlsLoad(ins: Instruction): boolean {
  const { Mnemonic, OpKind, Register } = ic();
  return (
    ins.mnemonic === Mnemonic.Mov &&
    ins.op0Kind === OpKind.Register &&
    ins.op1Kind === OpKind.Memory &&
    (ins.memorySegment === Register.FS || ins.memoryBase === Register.RIP)
  );
}

function isGuardCompare(ins: Instruction, g: Register, reg: Register): boolean {
  const { Mnemonic, OpKind, Register } = ic();
  return (
    ins.mnemonic === Mnemonic.Cmp &&
    ins.op0Kind === OpKind.Register &&
    ins.op0Register === reg &&
    ins.op1Kind === OpKind.Memory &&
    ins.memoryBase === g &&
    ins.memoryIndex === Register.None &&
    ins.memoryDisplacement === STACKGUARD0
  );
}

/** Decodes up to `max` instructions, stopping when `visit` returns false. Frees the decoder's memory. */
function decode(code: Uint8Array, address: number, max: number, visit: (ins: Instruction) => boolean): void {
  const { Decoder, DecoderOptions, Instruction } = ic();
  const decoder = new Decoder(64, code, DecoderOptions.None);
  const ins = new Instruction();
  try {
    decoder.ip = BigInt(address);
    // Every decode consumes at least one byte, so this ends within code.length steps.
    for (let n = 0; n < max && decoder.canDecode; n++) {
      decoder.decodeOut(ins);
      if (!visit(ins)) break;
    }
  } finally {
    ins.free();
    decoder.free();
  }
}
