/**
 * The kernel's floor for a traced binary: the very sites the agent would
 * probe, each with a BPF program that does nothing (gt_calibration_empty).
 * What a request costs then is the uprobe trap and dispatch alone — the
 * least any uprobe-based tracer can cost with that many hits.
 */
import { planBinaryAt } from '../daemon/agent/binary-plan.ts';
import { DEFAULT_BPF_OBJECT } from '../daemon/agent/bpf-runtime.ts';
import { BpfPrograms } from '../daemon/generated/layouts.ts';
import { BpfObject } from '../daemon/native/index.ts';
import { probes } from '../daemon/probes/registry.ts';

export interface Floor {
  /** Sites attached. */
  sites: number;
  /** The empty program's run count and run time so far (they advance only while the kernel's run-time statistics are enabled). */
  stats(): { runs: bigint; ns: bigint };
  detach(): Promise<void>;
}

/** Attaches the empty program at every site gotrail's plan for `bin` has. Throws when the plan fails. */
export function attachFloor(bin: string): Floor {
  const { plan, error } = planBinaryAt(bin, probes);
  if (!plan) throw new Error(`plan ${bin}: ${error?.message}`);
  const obj = new BpfObject(DEFAULT_BPF_OBJECT, { autoload: [BpfPrograms.gt_calibration_empty] });
  obj.load();
  const handles: number[] = [];
  let sites = 0;
  try {
    for (const p of plan.probes) {
      if (!p.attachable) continue;
      for (const s of p.sites) {
        if (!s.offsets.length) continue;
        handles.push(obj.attachUprobes(BpfPrograms.gt_calibration_empty, bin, s.offsets, []));
        sites += s.offsets.length;
      }
    }
  } catch (e) {
    obj.close();
    throw e;
  }
  return {
    sites,
    stats: () => {
      const p = obj.programStats().find((x) => x.name === BpfPrograms.gt_calibration_empty);
      return { runs: p?.runCount ?? 0n, ns: p?.runTimeNs ?? 0n };
    },
    detach: async () => {
      await obj.detachAsync(handles);
      obj.close();
    },
  };
}
