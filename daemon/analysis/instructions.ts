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
 * Whether the kernel's x86 uprobe emulates the instruction at `address`
 * (branches, calls, returns, PUSH, NOP), so a probe there costs one trap.
 * Any other instruction (Go before 1.21 follows the stack check with
 * `SUB RSP, N`) is single-stepped out of line: a second trap per hit.
 */
export function kernelEmulates(code: Uint8Array, address: number): boolean {
  const { Mnemonic } = ic();
  let emulated = false;
  decode(code, address, 1, (ins) => {
    const m = ins.mnemonic;
    emulated = m === Mnemonic.Ret || m === Mnemonic.Push || m === Mnemonic.Nop || m === Mnemonic.Jmp || m === Mnemonic.Call || ins.isJccShortOrNear || ins.isJmpShortOrNear || ins.isCallNear;
    return false;
  });
  return emulated;
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
