/**
 * runtime: goroutine ancestry. Makes no span: it records, for every goroutine
 * created while its creator serves a traced request (directly, or through up
 * to {@link GOROUTINE_GENERATIONS_MAX} generations of goroutines), that
 * request's span, so that the CLIENT spans of calls made on it are that
 * request's children. The link lasts while the request is being served. The
 * BPF side is probes/go/runtime/runtime.bpf.c and probes/include/ancestry.h.
 */
import { BpfMaps, BpfPrograms, RuntimeFlags, encodeRuntimeConfig } from '../../../generated/layouts.ts';
import { fieldResolved, type ProbeDescriptor } from '../../types.ts';

/** Generations through which a request's span is inherited (GT_GOROUTINE_GENERATIONS_MAX in BPF). */
export const GOROUTINE_GENERATIONS_MAX = 8;

const F = {
  gM: 'runtime.g.m',
  mCurg: 'runtime.m.curg',
  parentGoid: 'runtime.g.parentGoid',
} as const;

/** Whether newproc1 of Go `version` (`go1.26.8`) sets the new goroutine's parentGoid: from Go 1.21 (the field exists, unset, in older ones). */
function setsParentGoid(version: string | undefined): boolean {
  const m = /^(?:go)?1\.(\d+)/.exec(version ?? '');
  return m !== null && Number(m[1]) >= 21;
}

export const runtimeProbe: ProbeDescriptor = {
  id: 'runtime/goroutines',
  module: 'std',
  goPackage: 'runtime',
  description: 'goroutine ancestry (calls made on goroutines started while serving a request join its trace)',
  functions: [
    // one per goroutine exit: its entry in the ancestry map is removed; on the
    // stack check's branch, which the kernel emulates (Go 1.19's SUBQ after
    // the check is single-stepped: several times the cost; a second delete is harmless)
    { symbol: 'runtime.goexit1', entryProgram: BpfPrograms.gt_runtime_goexit1, entryAtStackCheck: true },
  ],
  // one probe hit per `go` statement: the new goroutine and its creator, at
  // newproc's CALL of runqput (emulated by the kernel: one trap), else at
  // newproc1's RETs (single-stepped: a second trap per `go` statement)
  preferredSites: {
    functions: [
      { symbol: 'runtime.newproc.func1', atCalls: [{ callee: 'runtime.runqput', program: BpfPrograms.gt_runtime_newproc_runqput }] },
      // a coroutine's goroutine (iter.Pull, Go 1.23+) is made by newproc1
      // from newcoro's closure, not newproc's: right after that call the
      // new *g is newproc1's result in RAX, as at its RETs (a single-stepped
      // instruction, but coroutines are rare)
      { symbol: 'runtime.newcoro.func1', afterCall: { callee: 'runtime.newproc1', program: BpfPrograms.gt_runtime_newproc1_return }, whenLinked: true },
    ],
    otherwise: [{ symbol: 'runtime.newproc1', returnProgram: BpfPrograms.gt_runtime_newproc1_return }],
  },
  fields: {
    [F.gM]: { reads: 'the M running newproc1 on its g0, whose current goroutine is the creator' },
    [F.mCurg]: { reads: 'the creating goroutine (the M\'s current goroutine while newproc1 runs on g0)' },
    [F.parentGoid]: { reads: 'the creating goroutine\'s id on the new goroutine (set by newproc1 from Go 1.21)', optional: 'the creator is read through the M (two more reads of memory per go statement)', goSince: '1.21' },
  },
  // ancestry serves the spans of outgoing calls: without a client probe it would only cost
  onlyWith: ['net/http/client', 'google.golang.org/grpc/client'],
  configMap: BpfMaps.gt_runtime_config,
  stateMaps: [BpfMaps.gt_goroutine_origins],
  encodeConfig(o, missingOptional, goVersion) {
    const parent = fieldResolved(o, missingOptional)(F.parentGoid) && setsParentGoid(goVersion);
    return encodeRuntimeConfig({
      g_m: o[F.gM] ?? 0,
      m_curg: o[F.mCurg] ?? 0,
      flags: RuntimeFlags.GT_RUNTIME_ENABLED | (parent ? RuntimeFlags.GT_RUNTIME_PARENT_GOID : 0),
      g_parent_goid: parent ? o[F.parentGoid] ?? 0 : 0,
    });
  },
};
