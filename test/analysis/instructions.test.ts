// The instruction-level probe-site logic on hand-assembled byte sequences,
// covering each prologue shape (the real-binary tests cover what today's
// toolchains emit; these also cover older Go's TLS-loaded g).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addressAfterStackCheck, callReturnAddresses, errCheckAfterCall, kernelEmulates, retAddresses, stackCheckBranch, trapKind, type TrapKind } from '../../daemon/analysis/instructions.ts';

const AT = 0x401000;
const bytes = (...parts: number[][]): Uint8Array => Uint8Array.from(parts.flat());

const CMP_RSP_G = [0x49, 0x3b, 0x66, 0x10]; // cmp rsp, [r14+0x10]
const JBE_SHORT = [0x76, 0x40];
const JBE_NEAR = [0x0f, 0x86, 0x10, 0x01, 0x00, 0x00];
const LEA_R12 = [0x4c, 0x8d, 0x64, 0x24, 0x98]; // lea r12, [rsp-0x68]
const CMP_R12_G = [0x4d, 0x3b, 0x66, 0x10]; // cmp r12, [r14+0x10]
const MOV_R12_RSP = [0x49, 0x89, 0xe4]; // mov r12, rsp
const SUB_R12 = [0x49, 0x81, 0xec, 0x98, 0x7f, 0x00, 0x00]; // sub r12, 0x7f98
const JB_NEAR = [0x0f, 0x82, 0x8c, 0x00, 0x00, 0x00];
const PUSH_RBP = [0x55];
const RET = [0xc3];

describe('the stack-growth check\'s branch (a probe site the kernel emulates)', () => {
  test('the JBE of each prologue shape', () => {
    assert.equal(stackCheckBranch(bytes(CMP_RSP_G, JBE_SHORT, PUSH_RBP), AT), AT + 4);
    assert.equal(stackCheckBranch(bytes(LEA_R12, CMP_R12_G, JBE_NEAR, PUSH_RBP), AT), AT + 9);
    assert.equal(stackCheckBranch(bytes(MOV_R12_RSP, SUB_R12, JB_NEAR, CMP_R12_G, JBE_NEAR, PUSH_RBP), AT), AT + 20);
  });

  test('none without the check', () => {
    assert.equal(stackCheckBranch(bytes([0x48, 0x89, 0xd8], RET), AT), undefined);
    assert.equal(stackCheckBranch(bytes(CMP_RSP_G, [0x74, 0x10]), AT), undefined); // JE, not JBE
  });
});

describe('entry site past the stack-growth check', () => {
  test('small frame: CMP RSP; JBE', () => {
    assert.equal(addressAfterStackCheck(bytes(CMP_RSP_G, JBE_NEAR, PUSH_RBP), AT), AT + 10);
    assert.equal(addressAfterStackCheck(bytes(CMP_RSP_G, JBE_SHORT, PUSH_RBP), AT), AT + 6);
  });

  test('large frame: LEA R12; CMP R12; JBE', () => {
    assert.equal(addressAfterStackCheck(bytes(LEA_R12, CMP_R12_G, JBE_NEAR, PUSH_RBP), AT), AT + 15);
  });

  test('huge frame: MOV R12, RSP; SUB; JB; CMP R12; JBE', () => {
    assert.equal(addressAfterStackCheck(bytes(MOV_R12_RSP, SUB_R12, JB_NEAR, CMP_R12_G, JBE_NEAR, PUSH_RBP), AT), AT + 26);
  });

  test('g loaded from TLS (ABI0 and Go before 1.17)', () => {
    const movRcxFs = [0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff]; // mov rcx, fs:[-8]
    const cmpRspRcx = [0x48, 0x3b, 0x61, 0x10]; // cmp rsp, [rcx+0x10]
    assert.equal(addressAfterStackCheck(bytes(movRcxFs, cmpRspRcx, JBE_SHORT, PUSH_RBP), AT), AT + 15);
    // PIC: the TLS offset is loaded first, then g through FS.
    const movRcxRip = [0x48, 0x8b, 0x0d, 0x00, 0x10, 0x00, 0x00]; // mov rcx, [rip+0x1000]
    const movRcxFsRcx = [0x64, 0x48, 0x8b, 0x09]; // mov rcx, fs:[rcx]
    assert.equal(addressAfterStackCheck(bytes(movRcxRip, movRcxFsRcx, cmpRspRcx, JBE_SHORT, PUSH_RBP), AT), AT + 17);
  });

  test('no check (NOSPLIT), or something else that only looks like one: the entry', () => {
    assert.equal(addressAfterStackCheck(bytes([0x48, 0x89, 0xd8], RET), AT), AT); // mov rax, rbx; ret
    assert.equal(addressAfterStackCheck(bytes([0x49, 0x3b, 0x66, 0x18], JBE_SHORT), AT), AT); // stackguard1
    assert.equal(addressAfterStackCheck(bytes(CMP_RSP_G, [0x74, 0x10]), AT), AT); // JE, not JBE
    assert.equal(addressAfterStackCheck(bytes(CMP_R12_G, JBE_SHORT), AT), AT); // R12 never set from RSP
    assert.equal(addressAfterStackCheck(bytes(CMP_RSP_G), AT), AT); // cut short
    assert.equal(addressAfterStackCheck(new Uint8Array(0), AT), AT);
  });
});

describe('RET sites', () => {
  test('finds RET instructions, not 0xC3 bytes inside other instructions', () => {
    const code = bytes(
      [0xb8, 0xc3, 0x00, 0x00, 0x00], // mov eax, 0xc3
      RET,
      [0x48, 0x8d, 0x05, 0xc3, 0xc3, 0x00, 0x00], // lea rax, [rip+0xc3c3]
      [0xc2, 0x08, 0x00], // ret 8
      RET,
      [0xcc, 0xcc, 0xcc], // padding
    );
    assert.deepEqual(retAddresses(code, AT), [AT + 5, AT + 13, AT + 16]);
  });

  test('undecodable bytes are stepped over and never loop', () => {
    const junk = new Uint8Array(4096).fill(0x0f);
    junk[4095] = 0xc3;
    const t0 = performance.now();
    const rets = retAddresses(junk, AT);
    assert.ok(performance.now() - t0 < 2000);
    assert.ok(rets.every((a) => a >= AT && a < AT + 4096));
    assert.deepEqual(retAddresses(new Uint8Array(0), AT), []);
  });
});

describe('call-return sites', () => {
  test('the instruction after each direct CALL to the target, not calls elsewhere or through a register', () => {
    const call = (from: number, to: number): number[] => {
      const rel = to - (from + 5);
      return [0xe8, rel & 0xff, (rel >> 8) & 0xff, (rel >> 16) & 0xff, (rel >>> 24) & 0xff];
    };
    const target = AT + 0x1000;
    const code = bytes(
      call(AT, target), // AT: call target
      [0x48, 0x85, 0xc0], // AT+5: test rax, rax
      call(AT + 8, AT + 0x2000), // AT+8: call elsewhere
      [0xff, 0xd2], // AT+13: call rdx
      call(AT + 15, target), // AT+15: call target again
      RET, // AT+20
    );
    assert.deepEqual(callReturnAddresses(code, AT, target), [AT + 5, AT + 20]);
    assert.deepEqual(callReturnAddresses(code, AT, AT + 0x3000), []);
  });
});

describe('the branch on a call\'s error result (Transport.roundTrip\'s shape)', () => {
  const TARGET = AT + 0x10000;
  /** A tiny assembler: labels, rel32 branches and calls resolved in a second pass. */
  type Part = number[] | { label: string } | { jmp: string } | { je: string } | { jne: string } | { jl: string } | { call: number };
  function asm(parts: Part[]): { code: Uint8Array; at: Record<string, number> } {
    const size = (p: Part): number => (Array.isArray(p) ? p.length : 'label' in p ? 0 : 'jmp' in p || 'call' in p ? 5 : 6);
    const at: Record<string, number> = {};
    let a = AT;
    for (const p of parts) {
      if (!Array.isArray(p) && 'label' in p) at[p.label] = a;
      a += size(p);
    }
    const out: number[] = [];
    const rel = (from: number, to: number): number[] => {
      const r = to - from;
      return [r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff, (r >>> 24) & 0xff];
    };
    a = AT;
    for (const p of parts) {
      const next = a + size(p);
      if (Array.isArray(p)) out.push(...p);
      else if ('jmp' in p) out.push(0xe9, ...rel(next, at[p.jmp]!));
      else if ('call' in p) out.push(0xe8, ...rel(next, p.call));
      else if ('je' in p) out.push(0x0f, 0x84, ...rel(next, at[p.je]!));
      else if ('jne' in p) out.push(0x0f, 0x85, ...rel(next, at[p.jne]!));
      else if ('jl' in p) out.push(0x0f, 0x8c, ...rel(next, at[p.jl]!));
      a = next;
    }
    return { code: Uint8Array.from(out), at };
  }
  const NOPW = [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00];
  const TEST_RBX = [0x48, 0x85, 0xdb];
  const TEST_RAX = [0x48, 0x85, 0xc0];
  const CALL_RCX = [0xff, 0xd1];
  const MOV_RBX_RCX = [0x48, 0x89, 0xcb];
  const MOV_MEM_RBX = [0x48, 0x89, 0x5c, 0x24, 0x60]; // mov [rsp+0x60], rbx: reads RBX only
  const XOR_EBX = [0x31, 0xdb];
  const TEST_CL = [0x84, 0xc9];
  /**
   * loop: [http2?] JE h1; CALL RCX; JMP join; h1: CALL target; NOPW; join: TEST RBX, RBX; JE ok;
   * error: TEST CL, CL; JNE loop (retry); RET; ok: RET; [deferreturn landing: RET]
   */
  function roundTrip(o: { beforeTest?: number[]; test?: number[]; jcc?: 'je' | 'jne' | 'jl'; h2Tail?: number[]; second?: boolean; okBack?: boolean; okShares?: boolean; okBranches?: boolean; okTwo?: boolean; extra?: Part[] } = {}) {
    const jcc = o.jcc ?? 'je';
    // JE ok (falling through to the error path), or JNE error; JMP ok
    const branch: Part = jcc === 'je' ? { je: 'ok' } : jcc === 'jne' ? { jne: 'error' } : { jl: 'ok' };
    return asm([
      { label: 'loop' }, TEST_CL, { je: 'h1' },
      CALL_RCX, ...(o.h2Tail ? [o.h2Tail] : []), { jmp: 'join' },
      { label: 'h1' }, { call: TARGET }, NOPW, ...(o.beforeTest ? [o.beforeTest] : []),
      { label: 'join' }, o.test ?? TEST_RBX, { label: 'branch' }, branch,
      ...(jcc === 'jne' ? [{ jmp: 'ok' } as Part] : []),
      { label: 'error' },
      ...(o.second ? [{ call: TARGET } as Part] : []),
      TEST_CL, { jne: 'loop' }, { label: 'errret' }, RET,
      { label: 'ok' }, ...(o.okBack ? [{ jmp: 'loop' } as Part] : []), ...(o.okShares ? [{ jmp: 'errret' } as Part] : []),
      ...(o.okBranches ? [TEST_CL, { jne: 'errret' } as Part] : []),
      ...(o.okTwo ? [TEST_CL, { jne: 'okret' } as Part, RET] : []),
      { label: 'okret' }, RET,
      ...(o.extra ?? []),
      { label: 'landing' }, [0x90], RET,
    ]);
  }

  test('found: the JE after TEST RBX, RBX; the RET only its taken edge reaches; the HTTP/2 path joining after CALL reg; JMP', () => {
    const { code, at } = roundTrip();
    assert.deepEqual(errCheckAfterCall(code, AT, TARGET), { branch: at['branch'], successRets: [at['okret']] });
    // with a spill of RBX between the indirect call and its JMP (a read, not a write)
    const spilled = roundTrip({ h2Tail: MOV_MEM_RBX });
    assert.deepEqual(errCheckAfterCall(spilled.code, AT, TARGET), { branch: spilled.at['branch'], successRets: [spilled.at['okret']] });
  });

  test('found: JNE, whose fall-through is the nil-error edge', () => {
    const { code, at } = roundTrip({ jcc: 'jne' });
    assert.deepEqual(errCheckAfterCall(code, AT, TARGET), { branch: at['branch'], successRets: [at['okret']] });
  });

  const reasons: Array<[string, Parameters<typeof roundTrip>[0], RegExp]> = [
    ['no call of the target', {}, /0 direct calls/],
    ['a second call of the target', { second: true }, /2 direct calls/],
    ['RBX written between the call and the test', { beforeTest: MOV_RBX_RCX }, /not tested right after/],
    ['EBX zeroed between the call and the test', { beforeTest: XOR_EBX }, /not tested right after/],
    ['RAX tested instead of RBX', { test: TEST_RAX }, /not tested right after/],
    ['a Jcc other than JE or JNE', { jcc: 'jl' }, /not followed by a JE or JNE/],
    ['the joining path writes RBX after its call', { h2Tail: XOR_EBX }, /comes from no indirect call/],
    ['the nil-error path loops back', { okBack: true }, /comes back to the test/],
    ['the nil-error path shares a RET with the error path', { okShares: true }, /shares a RET/],
    ['the nil-error path branches to a RET of the error path', { okBranches: true }, /shares a RET/],
    ['the nil-error path branches to two RETs of its own', { okTwo: true }, /reaches 2 RETs, not one/],
    ['a jump table', { extra: [[0xff, 0xe0]] }, /indirect JMP/], // jmp rax
    ['a branch straight to the JE, past its test', { extra: [{ jmp: 'branch' }] }, /past its test/],
    ['a path joining the test from no call', { extra: [XOR_EBX, { jmp: 'join' }] }, /comes from no indirect call/],
  ];
  for (const [what, shape, reason] of reasons) {
    test(`not found: ${what}`, () => {
      const { code } = roundTrip(shape);
      const target = what === 'no call of the target' ? TARGET + 0x1000 : TARGET;
      const r = errCheckAfterCall(code, AT, target);
      assert.ok('reason' in r, `${what}: ${JSON.stringify(r)}`);
      assert.match(r.reason, reason);
    });
  }

  test('not found: a branch into the middle of an instruction, or bytes that do not decode', () => {
    const { code } = roundTrip({ extra: [{ jmp: 'join' }] });
    // retarget that last JMP one byte into the TEST
    const bad = Uint8Array.from(code);
    const jmpAt = code.length - 2 - 5;
    bad[jmpAt + 1] = bad[jmpAt + 1]! + 1;
    assert.match((errCheckAfterCall(bad, AT, TARGET) as { reason: string }).reason, /middle of an instruction/);
    assert.match((errCheckAfterCall(Uint8Array.from([...code, 0x0f, 0xff]), AT, TARGET) as { reason: string }).reason, /does not decode/);
  });
});

test('the instruction decoder, once released, is loaded again by the next analysis', async () => {
  const { retAddresses, releaseInstructionDecoder } = await import('../../daemon/analysis/instructions.ts');
  const code = new Uint8Array([0x90, 0xc3, 0x90, 0xc3]); // NOP; RET; NOP; RET
  assert.deepEqual(retAddresses(code, 0x1000), [0x1001, 0x1003]);
  releaseInstructionDecoder();
  const { createRequire } = await import('node:module');
  const cached = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/node_modules/iced-x86/'));
  assert.deepEqual(cached, [], 'released: no longer in the require cache');
  assert.deepEqual(retAddresses(code, 0x1000), [0x1001, 0x1003]);
});

describe('whether the kernel emulates a probed instruction (one trap) or single-steps it (two)', () => {
  const cases: Array<[string, number[], TrapKind]> = [
    ['RET', [0xc3], 'single_stepped'],
    ['RET imm16', [0xc2, 0x08, 0x00], 'single_stepped'],
    ['CALL rel32', [0xe8, 0x10, 0x20, 0x00, 0x00], 'emulated'],
    ['CALL rcx (indirect through a register)', [0xff, 0xd1], 'single_stepped'],
    ['CALL [rax+8] (indirect through memory)', [0xff, 0x50, 0x08], 'single_stepped'],
    ['JMP rdx (indirect)', [0xff, 0xe2], 'single_stepped'],
    ['JMP rel8', [0xeb, 0x10], 'emulated'],
    ['JMP rel32', [0xe9, 0x00, 0x01, 0x00, 0x00], 'emulated'],
    ['JBE rel8', JBE_SHORT, 'emulated'],
    ['JBE rel32', JBE_NEAR, 'emulated'],
    ['JB rel32', JB_NEAR, 'emulated'],
    ['PUSH rbp', PUSH_RBP, 'emulated'],
    ['PUSH r12', [0x41, 0x54], 'emulated'],
    ['PUSH imm8', [0x6a, 0x01], 'single_stepped'],
    ['PUSH [rax]', [0xff, 0x30], 'single_stepped'],
    ['NOP', [0x90], 'emulated'],
    ['NOPL [rax+rax*1+0]', [0x0f, 0x1f, 0x44, 0x00, 0x00], 'emulated'],
    ['NOPW (66 0F 1F 44 00 00)', [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00], 'emulated'],
    ['PAUSE (F3 90)', [0xf3, 0x90], 'single_stepped'],
    ['XCHG r8d, eax (41 90)', [0x41, 0x90], 'single_stepped'],
    ['MOV rbp, rsp', [0x48, 0x89, 0xe5], 'single_stepped'],
    ['MOV rax, [rsp+8]', [0x48, 0x8b, 0x44, 0x24, 0x08], 'single_stepped'],
    ['SUB rsp, 0x18', [0x48, 0x83, 0xec, 0x18], 'single_stepped'],
    ['CMP rsp, [r14+0x10]', CMP_RSP_G, 'single_stepped'],
    ['LEA r12, [rsp-0x68]', LEA_R12, 'single_stepped'],
  ];
  for (const [name, code, kind] of cases) {
    test(`${name}: ${kind}`, () => {
      // trailing bytes must not change the answer: the site is decoded inside its function's code
      const within = bytes(code, RET, [0xcc, 0xcc]);
      assert.equal(trapKind(within, AT), kind);
      assert.equal(kernelEmulates(within, AT), kind === 'emulated');
    });
  }

  test('nothing to decode: single-stepped', () => {
    assert.equal(trapKind(new Uint8Array(0), AT), 'single_stepped');
  });
});
