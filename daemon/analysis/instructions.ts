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
 * The conditional branch on the error result of a function's one direct CALL
 * of `target` (see {@link errCheckAfterCall}).
 */
export interface ErrCheck {
  /** Address of the `JE`/`JNE` right after `TEST RBX, RBX`. */
  branch: number;
  /** Addresses of the RETs reachable from the function's entry only through the branch's nil-error edge. */
  successRets: number[];
}

/** Why {@link errCheckAfterCall} found no such branch. */
export interface NoErrCheck {
  reason: string;
}

/** One decoded instruction, as the control-flow analysis needs it. */
interface FlowInstruction {
  ip: number;
  next: number;
  flow: Iced.FlowControl;
  mnemonic: Iced.Mnemonic;
  /** Direct branch or call target. */
  target?: number;
  /** Whether it writes RAX or RBX (any part of them). */
  writesResult: boolean;
  testsRbx: boolean;
}

/** Instructions decoded linearly from `address`; undefined when some bytes do not decode. */
function flowInstructions(code: Uint8Array, address: number): FlowInstruction[] | undefined {
  const { Code, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register, RegisterExt } = ic();
  const infos = new InstructionInfoFactory();
  const out: FlowInstruction[] = [];
  const writes = new Set([OpAccess.Write, OpAccess.CondWrite, OpAccess.ReadWrite, OpAccess.ReadCondWrite]);
  let invalid = false;
  try {
    decode(code, address, Number.MAX_SAFE_INTEGER, (ins) => {
      if (ins.code === Code.INVALID) {
        invalid = true;
        return false;
      }
      const info = infos.info(ins);
      let writesResult = false;
      try {
        for (const u of info.usedRegisters() as Iced.UsedRegister[]) {
          const full = RegisterExt.fullRegister(u.register);
          if ((full === Register.RAX || full === Register.RBX) && writes.has(u.access)) writesResult = true;
          u.free();
        }
      } finally {
        info.free();
      }
      const direct = ins.flowControl === FlowControl.UnconditionalBranch || ins.flowControl === FlowControl.ConditionalBranch || ins.flowControl === FlowControl.Call;
      const f: FlowInstruction = {
        ip: Number(ins.ip),
        next: Number(ins.nextIP),
        flow: ins.flowControl,
        mnemonic: ins.mnemonic,
        writesResult,
        testsRbx: ins.mnemonic === Mnemonic.Test && ins.op0Kind === OpKind.Register && ins.op1Kind === OpKind.Register && ins.op0Register === Register.RBX && ins.op1Register === Register.RBX,
      };
      if (direct && ins.op0Kind === OpKind.NearBranch64) f.target = Number(ins.nearBranchTarget);
      out.push(f);
      return true;
    });
  } finally {
    infos.free();
  }
  return invalid ? undefined : out;
}

/** Most instructions between a call and the test of its result (Go puts a NOP for the call's inline mark, no more). */
const ERR_CHECK_MAX_GAP = 4;

/**
 * The conditional branch that tests the error result of the one direct CALL
 * of `target` in `code` (a Go function decoded from `address`), and the RETs
 * that only its nil-error edge reaches. With Go's register ABI a callee
 * returning `(*T, error)` leaves the pointer in RAX and the error's itab in
 * RBX (0: nil error); `if err == nil` right after the call is
 *
 *     CALL target; [NOPs]; TEST RBX, RBX; JE nil_error   (or JNE error)
 *
 * A uprobe on that Jcc is emulated by the kernel, and there RAX, RBX still
 * hold the call's results, so a probe there can end a call that succeeded,
 * and the RETs that only a success reaches need no probe of their own (a RET
 * is single-stepped, a second trap per hit).
 *
 * Found only when every condition holds, else `reason` says which failed:
 * exactly one direct CALL of `target`; nothing between it and the Jcc writes
 * RAX or RBX or branches; every other way into that stretch is an
 * unconditional JMP that follows an indirect CALL (a call through an
 * interface whose results the join tests alike, e.g. the HTTP/2 round
 * tripper's) with nothing writing RAX or RBX between; the function has no
 * indirect JMP (a jump table hides edges) and no branch into the middle of an
 * instruction; the nil-error edge does not come back to the check, and it
 * reaches one RET, reached through it alone. The caller names a call whose
 * nil error means the function returns success (`return resp, nil`). Reachability follows every
 * direct JMP, Jcc and fall-through (a call that never returns is assumed to
 * return): an over-approximation, which can only keep more RETs probed. A
 * RET that no path from the entry reaches (the landing of a recovered panic,
 * `CALL runtime.deferreturn; ...; RET`) keeps its probe.
 */
export function errCheckAfterCall(code: Uint8Array, address: number, target: number): ErrCheck | NoErrCheck {
  const { FlowControl, Mnemonic } = ic();
  const all = flowInstructions(code, address);
  if (!all) return { reason: 'some of its code does not decode' };
  const at = new Map(all.map((ins, i) => [ins.ip, i]));
  const end = address + code.length;
  const inside = (a: number): boolean => a >= address && a < end;
  // edges, by target: every branch into the function must land on an instruction
  const jumpsTo = new Map<number, number[]>();
  for (const [i, ins] of all.entries()) {
    if (ins.flow === FlowControl.IndirectBranch) return { reason: `an indirect JMP at 0x${ins.ip.toString(16)} (a jump table) hides where it goes` };
    if ((ins.flow === FlowControl.UnconditionalBranch || ins.flow === FlowControl.ConditionalBranch) && ins.target !== undefined && inside(ins.target)) {
      const t = at.get(ins.target);
      if (t === undefined) return { reason: `a branch at 0x${ins.ip.toString(16)} into the middle of an instruction` };
      jumpsTo.set(t, [...(jumpsTo.get(t) ?? []), i]);
    }
  }
  const calls = all.flatMap((ins, i) => (ins.flow === FlowControl.Call && ins.target === target ? [i] : []));
  if (calls.length !== 1) return { reason: `${calls.length} direct calls of the callee, not one` };
  const call = calls[0]!;
  // the stretch from the call's return to the Jcc: nothing but the test may matter there
  let test = call + 1;
  while (test < all.length && !all[test]!.testsRbx) {
    const ins = all[test]!;
    if (test - call > ERR_CHECK_MAX_GAP || ins.flow !== FlowControl.Next || ins.writesResult) return { reason: 'the call\'s results are not tested right after it (TEST RBX, RBX)' };
    test++;
  }
  const jcc = all[test + 1];
  if (test >= all.length || !jcc || (jcc.mnemonic !== Mnemonic.Je && jcc.mnemonic !== Mnemonic.Jne) || jcc.target === undefined || !inside(jcc.target)) {
    return { reason: 'the test of the call\'s error result is not followed by a JE or JNE' };
  }
  if (jumpsTo.has(test + 1)) return { reason: 'a branch arrives at the JE/JNE past its test' };
  // every other way into the stretch: `CALL reg; [no RAX/RBX write]; JMP` into it
  for (let i = call + 1; i <= test; i++) {
    for (const src of jumpsTo.get(i) ?? []) {
      if (all[src]!.flow !== FlowControl.UnconditionalBranch) return { reason: `a conditional branch at 0x${all[src]!.ip.toString(16)} joins the test` };
      let j = src;
      for (;;) {
        if (jumpsTo.has(j)) return { reason: `the path joining the test at 0x${all[src]!.ip.toString(16)} is itself joined` };
        const prev = all[j - 1];
        if (!prev || src - j >= ERR_CHECK_MAX_GAP) return { reason: `the path joining the test at 0x${all[src]!.ip.toString(16)} comes from no call` };
        if (prev.flow === FlowControl.IndirectCall) break;
        if (prev.flow !== FlowControl.Next || prev.writesResult) return { reason: `the path joining the test at 0x${all[src]!.ip.toString(16)} comes from no indirect call` };
        j--;
      }
    }
  }
  const nilEdge = at.get(jcc.mnemonic === Mnemonic.Je ? jcc.target : jcc.next);
  const errEdge = at.get(jcc.mnemonic === Mnemonic.Je ? jcc.next : jcc.target);
  if (nilEdge === undefined || errEdge === undefined || nilEdge === errEdge) return { reason: 'the branch on the error result has no two ways' };
  const successors = (i: number): number[] => {
    const ins = all[i]!;
    const out: number[] = [];
    if (ins.flow !== FlowControl.UnconditionalBranch && ins.flow !== FlowControl.Return && i + 1 < all.length) out.push(i + 1);
    if ((ins.flow === FlowControl.UnconditionalBranch || ins.flow === FlowControl.ConditionalBranch) && ins.target !== undefined && inside(ins.target)) out.push(at.get(ins.target)!);
    return out;
  };
  const reach = (from: number, skipNilEdge: boolean): Set<number> => {
    const seen = new Set([from]);
    const todo = [from];
    while (todo.length) {
      const i = todo.pop()!;
      for (const s of successors(i)) {
        if (skipNilEdge && i === test + 1 && s === nilEdge) continue;
        if (!seen.has(s)) {
          seen.add(s);
          todo.push(s);
        }
      }
    }
    return seen;
  };
  const full = reach(0, false);
  if (!full.has(test + 1)) return { reason: 'the test of the call\'s error result is not reached from the entry' };
  const withoutNil = reach(0, true);
  const fromNil = reach(nilEdge, false);
  if (fromNil.has(test + 1)) return { reason: 'the nil-error path comes back to the test' };
  const rets = [...fromNil].filter((i) => all[i]!.flow === FlowControl.Return);
  if (rets.some((i) => withoutNil.has(i))) return { reason: 'the nil-error path shares a RET with other paths' };
  // `return resp, nil`: a nil-error path that branches to RETs of its own may return errors too
  if (rets.length !== 1) return { reason: `the nil-error path reaches ${rets.length} RETs, not one` };
  return { branch: jcc.ip, successRets: rets.map((i) => all[i]!.ip).sort((a, b) => a - b) };
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
