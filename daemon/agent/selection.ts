/**
 * Which processes the user wants traced. Rules are matched in order of
 * precedence: any exclude match wins over includes; with no include rules,
 * every Go process is included. gotrail's own processes are never traced.
 */
import { matchesGlob } from 'node:path';

export interface SelectionRules {
  /** Executable path globs to include (e.g. `/usr/local/bin/*`). Default: all. */
  includeExe?: string[];
  /** Executable path globs to exclude. */
  excludeExe?: string[];
  /** Process names (comm, as in `ps`), globs, to include. */
  includeName?: string[];
  /** Process names (comm), globs, to exclude. */
  excludeName?: string[];
}

export interface ProcessIdentity {
  pid: number;
  exe: string;
  name: string;
}

export interface Decision {
  traced: boolean;
  reason: string;
}

const any = (globs: string[] | undefined, value: string): string | undefined => globs?.find((g) => g === value || matchesGlob(value, g));

export function decide(rules: SelectionRules, p: ProcessIdentity): Decision {
  if (p.pid === process.pid) return { traced: false, reason: 'gotrail itself' };
  const ex = any(rules.excludeExe, p.exe);
  if (ex) return { traced: false, reason: `executable matches exclude rule ${ex}` };
  const exn = any(rules.excludeName, p.name);
  if (exn) return { traced: false, reason: `process name matches exclude rule ${exn}` };
  const hasIncludes = (rules.includeExe?.length ?? 0) + (rules.includeName?.length ?? 0) > 0;
  if (!hasIncludes) return { traced: true, reason: 'every Go process is traced by default' };
  const inc = any(rules.includeExe, p.exe);
  if (inc) return { traced: true, reason: `executable matches include rule ${inc}` };
  const incn = any(rules.includeName, p.name);
  if (incn) return { traced: true, reason: `process name matches include rule ${incn}` };
  return { traced: false, reason: 'matches no include rule' };
}
