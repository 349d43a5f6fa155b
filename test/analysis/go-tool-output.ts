/**
 * Parsers for the Go toolchain's own views of a binary, which the analysis
 * tests treat as ground truth.
 */
import { runGo } from '../support/go-build.ts';
import type { GoToolchain } from '../support/go-build.ts';

/** One `go tool nm -size` line. */
export interface NmSymbol {
  address: number;
  size: number;
  type: string;
  name: string;
}

/** `go tool nm -size -sort address`. Names may contain spaces (generic shapes), so the name is the rest of the line. */
export function goNm(tc: GoToolchain, bin: string): NmSymbol[] {
  const out: NmSymbol[] = [];
  for (const line of runGo(tc, ['tool', 'nm', '-size', '-sort', 'address', bin]).split('\n')) {
    const m = /^\s*([0-9a-f]+)\s+(\d+)\s+(\S)\s(.*)$/.exec(line);
    if (m) out.push({ address: parseInt(m[1]!, 16), size: Number(m[2]), type: m[3]!, name: m[4]! });
  }
  return out;
}

/**
 * Text symbols by name; a name can occur more than once (e.g. static C
 * functions). With `abbreviated`, names with type arguments are also
 * listed under the form Go 1.18–1.19 pclntabs use, `pkg.F[...].g`.
 */
export function textSymbolsByName(syms: NmSymbol[], abbreviated = false): Map<string, NmSymbol[]> {
  const map = new Map<string, NmSymbol[]>();
  const add = (name: string, s: NmSymbol): void => {
    const list = map.get(name);
    if (list) list.push(s);
    else map.set(name, [s]);
  };
  for (const s of syms) {
    if (s.type !== 'T' && s.type !== 't') continue;
    add(s.name, s);
    if (abbreviated && abbreviateTypeArgs(s.name) !== s.name) add(abbreviateTypeArgs(s.name), s);
  }
  return map;
}

/** What the Go 1.18–1.19 linkers write to the pclntab for a name with type arguments. */
export function abbreviateTypeArgs(name: string): string {
  const i = name.indexOf('[');
  const j = name.lastIndexOf(']');
  return i >= 0 && j > i ? `${name.slice(0, i)}[...]${name.slice(j + 1)}` : name;
}

/** One instruction line of `go tool objdump`. */
export interface ObjdumpLine {
  address: number;
  bytes: string;
  text: string;
}

/** `go tool objdump -s '^name$'`: the instructions of one function. */
export function goObjdump(tc: GoToolchain, bin: string, fn: string): ObjdumpLine[] {
  const re = `^${fn.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
  const out: ObjdumpLine[] = [];
  for (const line of runGo(tc, ['tool', 'objdump', '-s', re, bin]).split('\n')) {
    const m = /^\s+\S*:\d+\s+0x([0-9a-f]+)\s+([0-9a-f]+)\s+(.*?)\s*$/.exec(line);
    if (m) out.push({ address: parseInt(m[1]!, 16), bytes: m[2]!, text: m[3]! });
  }
  return out;
}

/** Parsed `go version -m`. */
export interface GoVersionM {
  goVersion: string;
  path?: string;
  mod?: string[];
  deps: { fields: string[]; replace?: string[] }[];
  /** Build settings with values as printed (possibly Go-quoted). */
  build: [string, string][];
}

export function goVersionM(tc: GoToolchain, bin: string): GoVersionM {
  const lines = runGo(tc, ['version', '-m', bin]).split('\n');
  const head = /: (\S.*)$/.exec(lines[0] ?? '');
  const res: GoVersionM = { goVersion: head ? head[1]! : '', deps: [], build: [] };
  for (const line of lines.slice(1)) {
    const f = line.split('\t').slice(1);
    switch (f[0]) {
      case 'path':
        res.path = f[1]!;
        break;
      case 'mod':
        res.mod = f.slice(1);
        break;
      case 'dep':
        res.deps.push({ fields: f.slice(1) });
        break;
      case '=>': {
        const last = res.deps[res.deps.length - 1];
        if (last) last.replace = f.slice(1);
        break;
      }
      case 'build': {
        const kv = f.slice(1).join('\t');
        const eq = kv.indexOf('=');
        res.build.push([kv.slice(0, eq), kv.slice(eq + 1)]);
        break;
      }
    }
  }
  return res;
}
