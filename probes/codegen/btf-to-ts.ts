/**
 * Generates the TypeScript decoders and encoders of every layout that crosses
 * the kernel/user boundary from the BTF of the compiled probe object, so the C
 * headers under probes/ stay the only definition of those layouts.
 *
 * Exported: every `struct gt_*` (except the gt_layouts_* anchors), every
 * `enum gt_*` found in the object's BTF, and the name of every map
 * (`BpfMaps`) and program (`BpfPrograms`) of the object, so that TypeScript
 * naming a map or program that does not exist fails the type check, as
 * cilium/ebpf's bpf2go does for Go.
 *
 * Id families: the enums named `gt_event_type`, `gt_hit_site` and
 * `gt_paired_function`, or starting with one of those names and `_`, are
 * merged into one object each (`EventType`, `HitSite`, `PairedFunction`):
 * each probe defines its ids in its own folder (`enum
 * gt_event_type_http_server`), and a value or name used twice in one family
 * stops the generator.
 *
 *   node probes/codegen/btf-to-ts.ts [object] [--out file] [--check]
 *
 * --check exits 1 (and says which file) when the committed output differs
 * from what the object generates: CI runs it so stale layouts cannot land.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface BtfMember { name: string; type_id: number; bits_offset: number; bitfield_size?: number }
interface BtfType {
  id: number; kind: string; name: string; size?: number; type_id?: number;
  encoding?: string; members?: BtfMember[]; values?: Array<{ name: string; val: number }>;
  nr_elems?: number; vlen?: number;
}

type Field =
  | { kind: 'int'; name: string; offset: number; size: 1 | 2 | 4 | 8; signed: boolean }
  | { kind: 'bytes'; name: string; offset: number; size: number }
  | { kind: 'struct'; name: string; offset: number; size: number; struct: string };

interface Struct { cName: string; tsName: string; size: number; fields: Field[] }

function pascal(cName: string): string {
  return cName.replace(/^gt_/, '').split('_').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('');
}

function upperSnake(cName: string): string {
  return cName.replace(/^gt_/, '').toUpperCase();
}

export function loadBtf(objectPath: string): Map<number, BtfType> {
  const json = execFileSync('bpftool', ['btf', 'dump', 'file', objectPath, 'format', 'raw', '-j'], {
    encoding: 'utf8', maxBuffer: 64 * 1024 * 1024,
  });
  const types = (JSON.parse(json) as { types: BtfType[] }).types;
  return new Map(types.map((t) => [t.id, t]));
}

function resolve(types: Map<number, BtfType>, id: number): BtfType {
  for (let depth = 0; depth < 32; depth++) {
    const t = types.get(id);
    if (!t) throw new Error(`BTF type ${id} not found`);
    if (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE' || t.kind === 'RESTRICT') {
      id = t.type_id ?? 0;
      continue;
    }
    return t;
  }
  throw new Error(`BTF type ${id}: typedef chain too long`);
}

function sizeOf(types: Map<number, BtfType>, t: BtfType): number {
  if (t.kind === 'ARRAY') {
    const elem = resolve(types, t.type_id ?? 0);
    return sizeOf(types, elem) * (t.nr_elems ?? 0);
  }
  if (t.size === undefined) throw new Error(`BTF ${t.kind} ${t.name} has no size`);
  return t.size;
}

function toStruct(types: Map<number, BtfType>, t: BtfType): Struct {
  const fields: Field[] = [];
  for (const m of t.members ?? []) {
    if (m.bitfield_size) throw new Error(`struct ${t.name}.${m.name}: bitfields are not allowed in exported layouts`);
    if (m.bits_offset % 8) throw new Error(`struct ${t.name}.${m.name}: not byte aligned`);
    const offset = m.bits_offset / 8;
    const mt = resolve(types, m.type_id);
    if (mt.kind === 'INT' || mt.kind === 'ENUM') {
      const size = mt.size as 1 | 2 | 4 | 8;
      fields.push({ kind: 'int', name: m.name, offset, size, signed: mt.kind === 'INT' ? mt.encoding === 'SIGNED' : false });
    } else if (mt.kind === 'ARRAY') {
      const elem = resolve(types, mt.type_id ?? 0);
      if (elem.kind !== 'INT' || elem.size !== 1) throw new Error(`struct ${t.name}.${m.name}: only byte arrays are supported`);
      fields.push({ kind: 'bytes', name: m.name, offset, size: sizeOf(types, mt) });
    } else if (mt.kind === 'STRUCT') {
      if (!mt.name.startsWith('gt_')) throw new Error(`struct ${t.name}.${m.name}: nested struct ${mt.name} is not exported (name it gt_*)`);
      fields.push({ kind: 'struct', name: m.name, offset, size: sizeOf(types, mt), struct: mt.name });
    } else {
      throw new Error(`struct ${t.name}.${m.name}: unsupported BTF kind ${mt.kind}`);
    }
  }
  return { cName: t.name, tsName: pascal(t.name), size: t.size ?? 0, fields };
}

function intReader(f: Extract<Field, { kind: 'int' }>, at: string): string {
  switch (f.size) {
    case 1: return `buf.${f.signed ? 'readInt8' : 'readUInt8'}(${at})`;
    case 2: return `buf.${f.signed ? 'readInt16LE' : 'readUInt16LE'}(${at})`;
    case 4: return `buf.${f.signed ? 'readInt32LE' : 'readUInt32LE'}(${at})`;
    case 8: return `buf.${f.signed ? 'readBigInt64LE' : 'readBigUInt64LE'}(${at})`;
  }
}

function intWriter(f: Extract<Field, { kind: 'int' }>, value: string, at: string): string {
  switch (f.size) {
    case 1: return `buf.${f.signed ? 'writeInt8' : 'writeUInt8'}(${value}, ${at})`;
    case 2: return `buf.${f.signed ? 'writeInt16LE' : 'writeUInt16LE'}(${value}, ${at})`;
    case 4: return `buf.${f.signed ? 'writeInt32LE' : 'writeUInt32LE'}(${value}, ${at})`;
    case 8: return `buf.${f.signed ? 'writeBigInt64LE' : 'writeBigUInt64LE'}(${value}, ${at})`;
  }
}

/** Enums whose values several sources (one per probe) contribute to; see the file's comment. */
export const ID_FAMILIES = ['gt_event_type', 'gt_hit_site', 'gt_paired_function'] as const;

function familyOf(enumName: string): string | undefined {
  return ID_FAMILIES.find((f) => enumName === f || enumName.startsWith(`${f}_`));
}

/**
 * Merges the enums of each id family into one enum named after the family.
 * Throws when two enums of a family give the same value or the same name.
 */
export function mergeFamilies(enums: readonly BtfType[]): BtfType[] {
  const out: BtfType[] = [];
  const families = new Map<string, Array<{ name: string; val: number; from: string }>>();
  for (const e of enums) {
    const fam = familyOf(e.name);
    if (fam === undefined) {
      out.push(e);
      continue;
    }
    const list = families.get(fam) ?? [];
    for (const v of e.values ?? []) {
      const clash = list.find((x) => x.val === v.val || x.name === v.name);
      if (clash) {
        throw new Error(`enum ${fam}: ${v.name} = ${v.val} (enum ${e.name}) clashes with ${clash.name} = ${clash.val} (enum ${clash.from}): every id of the family must be unique across probes`);
      }
      list.push({ ...v, from: e.name });
    }
    families.set(fam, list);
  }
  for (const [fam, values] of families) {
    out.push({ id: 0, kind: 'ENUM', name: fam, values: values.sort((a, b) => a.val - b.val).map(({ name, val }) => ({ name, val })) });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** The map and program names of the object: the `.maps` section's variables (anchors aside) and the global functions (BPF programs). */
export function objectNames(types: Map<number, BtfType>): { maps: string[]; programs: string[] } {
  const maps = new Set<string>();
  const programs = new Set<string>();
  for (const t of types.values()) {
    if (t.kind === 'DATASEC' && t.name === '.maps') {
      for (const v of (t as BtfType & { vars?: Array<{ type_id: number }> }).vars ?? []) {
        const name = types.get(v.type_id)?.name;
        if (name && !name.startsWith('gt_layouts_')) maps.add(name);
      }
    }
    // static functions are subprograms; a program is global (libbpf's rule too)
    if (t.kind === 'FUNC' && (t as BtfType & { linkage?: string }).linkage === 'global') programs.add(t.name);
  }
  return { maps: [...maps].sort(), programs: [...programs].sort() };
}

function nameConstants(out: string[], constName: string, typeName: string, what: string, names: string[]): void {
  out.push(`/** Every ${what} of the probes' object, by name: use these, never a string, so that a rename fails the type check. */`);
  out.push(`export const ${constName} = {`);
  for (const n of names) out.push(`  ${n}: '${n}',`);
  out.push('} as const;');
  out.push(`export type ${typeName} = (typeof ${constName})[keyof typeof ${constName}];`);
  out.push('');
}

export function generate(objectPath: string): string {
  const types = loadBtf(objectPath);
  const structs: Struct[] = [];
  const rawEnums: BtfType[] = [];
  const seen = new Set<string>();
  for (const t of [...types.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!t.name?.startsWith('gt_') || seen.has(`${t.kind}:${t.name}`)) continue;
    seen.add(`${t.kind}:${t.name}`);
    if (t.kind === 'STRUCT' && !t.name.startsWith('gt_layouts_')) structs.push(toStruct(types, t));
    if (t.kind === 'ENUM') rawEnums.push(t);
  }
  const enums = mergeFamilies(rawEnums);
  const names = objectNames(types);
  const byC = new Map(structs.map((s) => [s.cName, s]));
  const out: string[] = [];
  out.push('// Code generated by probes/codegen/btf-to-ts.ts from the probes\' BTF. DO NOT EDIT.');
  out.push('// Change the C definitions under probes/ and run `npm run gen`.');
  out.push('/* eslint-disable */');
  out.push('');
  nameConstants(out, 'BpfMaps', 'BpfMapName', 'map', names.maps);
  nameConstants(out, 'BpfPrograms', 'BpfProgramName', 'program', names.programs);
  for (const e of enums) {
    out.push(`/** enum ${e.name} */`);
    out.push(`export const ${pascal(e.name)} = {`);
    for (const v of e.values ?? []) out.push(`  ${v.name}: ${v.val},`);
    out.push('} as const;');
    out.push('');
  }
  for (const s of structs) {
    out.push(`/** struct ${s.cName} (${s.size} bytes) */`);
    out.push(`export interface ${s.tsName} {`);
    for (const f of s.fields) {
      const ty = f.kind === 'int' ? (f.size === 8 ? 'bigint' : 'number') : f.kind === 'bytes' ? 'Buffer' : byC.get(f.struct)?.tsName ?? 'never';
      out.push(`  ${f.name}: ${ty};`);
    }
    out.push('}');
    out.push('');
    out.push(`export const ${upperSnake(s.cName)}_SIZE = ${s.size};`);
    out.push(`export const ${s.tsName}Offsets = {`);
    for (const f of s.fields) out.push(`  ${f.name}: ${f.offset},`);
    out.push('} as const;');
    out.push('');
    out.push(`/** Decodes struct ${s.cName} at \`off\`; byte arrays are views into \`buf\`, not copies. */`);
    out.push(`export function decode${s.tsName}(buf: Buffer, off = 0): ${s.tsName} {`);
    out.push(`  if (off + ${s.size} > buf.length) throw new RangeError(\`${s.cName}: need ${s.size} bytes at \${off}, have \${buf.length - off}\`);`);
    out.push('  return {');
    for (const f of s.fields) {
      const at = `off + ${f.offset}`;
      if (f.kind === 'int') out.push(`    ${f.name}: ${intReader(f, at)},`);
      else if (f.kind === 'bytes') out.push(`    ${f.name}: buf.subarray(${at}, ${at} + ${f.size}),`);
      else out.push(`    ${f.name}: decode${byC.get(f.struct)?.tsName}(buf, ${at}),`);
    }
    out.push('  };');
    out.push('}');
    out.push('');
    out.push(`/** Encodes struct ${s.cName} into \`buf\` at \`off\` (a new zeroed buffer by default). */`);
    out.push(`export function encode${s.tsName}(v: ${s.tsName}, buf: Buffer = Buffer.alloc(${s.size}), off = 0): Buffer {`);
    for (const f of s.fields) {
      const at = `off + ${f.offset}`;
      if (f.kind === 'int') out.push(`  ${intWriter(f, `v.${f.name}`, at)};`);
      else if (f.kind === 'bytes') out.push(`  buf.fill(0, ${at}, ${at} + ${f.size}); v.${f.name}.copy(buf, ${at}, 0, Math.min(v.${f.name}.length, ${f.size}));`);
      else out.push(`  encode${byC.get(f.struct)?.tsName}(v.${f.name}, buf, ${at});`);
    }
    out.push('  return buf;');
    out.push('}');
    out.push('');
  }
  return out.join('\n');
}

function main(argv: string[]): number {
  const args = argv.filter((a) => !a.startsWith('--'));
  const check = argv.includes('--check');
  const outIdx = argv.indexOf('--out');
  const object = args[0] ?? join(root, 'build', 'probes', 'gotrail.bpf.o');
  const outPath = outIdx >= 0 && argv[outIdx + 1] ? argv[outIdx + 1]! : join(root, 'daemon', 'generated', 'layouts.ts');
  if (!existsSync(object)) {
    process.stderr.write(`btf-to-ts: ${object} does not exist; build the probes first (bash deploy/setup.sh)\n`);
    return 2;
  }
  let text: string;
  try {
    text = generate(object);
  } catch (e) {
    process.stderr.write(`btf-to-ts: ${(e as Error).message}\n`);
    return 1;
  }
  if (check) {
    const current = existsSync(outPath) ? readFileSync(outPath, 'utf8') : '';
    if (current !== text) {
      process.stderr.write(`btf-to-ts: ${relative(root, outPath)} is stale: the probes' layouts changed. Run \`npm run gen\` and commit the result.\n`);
      return 1;
    }
    process.stdout.write(`btf-to-ts: ${relative(root, outPath)} is up to date\n`);
    return 0;
  }
  writeFileSync(outPath, text);
  process.stdout.write(`btf-to-ts: wrote ${relative(root, outPath)}\n`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main(process.argv.slice(2));
}
