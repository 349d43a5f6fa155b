/**
 * The uprobe link sets an agent holds for traced binaries: its BPF object's
 * link sets less the process tracepoints, the socket-level injection's links
 * and the start-up calibration's own probe (on the helper binary, detached
 * once measured).
 */
import type { BpfObject } from '../../daemon/native/index.ts';

export function binaryLinkSets(obj: BpfObject): ReturnType<BpfObject['linkSets']> {
  return obj.linkSets().filter((l) => l.kind !== 'tracepoint' && l.kind !== 'socket' && l.program !== 'gt_calibration_empty');
}
