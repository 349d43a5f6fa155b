/**
 * What gotrail derives from a SQL query's text, per the OpenTelemetry
 * database conventions: the text with every literal replaced by `?`
 * (`db.query.text`, exported only when the user turns it on), the operation
 * (`db.operation.name`) and, for a simple statement on one table, that table
 * (`db.collection.name`). Neither the operation nor the table can carry a
 * value of the query.
 *
 * A small lexer rather than a SQL parser: it only has to tell literals,
 * comments, identifiers and keywords apart, in the dialects of PostgreSQL,
 * SQLite and MySQL, and it must never let a literal through, even in a
 * query cut short at the probe's capture limit.
 */

/** The dialect, as far as literals differ: in MySQL `"…"` is a string, elsewhere a quoted identifier. */
export type SqlDialect = 'mysql' | 'standard';

/**
 * `query` with every literal (strings, numbers, dollar-quoted bodies, hex and
 * bit strings, MySQL's double-quoted strings) replaced by `?` and comments
 * removed; placeholders (`$1`, `?`, `:name`, `@p1`) and identifiers kept.
 * A literal left open at the end (a query cut short) becomes `?` too.
 */
export function sanitizeSql(query: string, dialect: SqlDialect = 'standard'): string {
  let out = '';
  const n = query.length;
  let i = 0;
  const isIdent = (c: string | undefined): boolean => c !== undefined && /[\p{L}\p{N}_$]/u.test(c);
  while (i < n) {
    const c = query[i]!;
    const next = query[i + 1];
    // comments: dropped (they may hold anything)
    if (c === '-' && next === '-') {
      const end = query.indexOf('\n', i);
      i = end < 0 ? n : end;
      continue;
    }
    if (c === '#' && dialect === 'mysql') {
      const end = query.indexOf('\n', i);
      i = end < 0 ? n : end;
      continue;
    }
    if (c === '/' && next === '*') {
      const end = query.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      out += ' ';
      continue;
    }
    // strings, with a prefix (E'', B'', X'', N'', U&'') or none
    const prefix = /^(?:[eEbBxXnN]|[uU]&)'/.exec(query.slice(i, i + 3));
    if (c === "'" || (prefix && !isIdent(query[i - 1])) || (c === '"' && dialect === 'mysql')) {
      const quote = c === '"' ? '"' : "'";
      let j = prefix ? i + prefix[0].length : i + 1;
      const backslash = dialect === 'mysql' || (prefix !== null && /^[eE]/.test(prefix[0]));
      for (;;) {
        if (j >= n) break;
        const d = query[j]!;
        if (backslash && d === '\\') { j += 2; continue; }
        if (d === quote) {
          if (query[j + 1] === quote) { j += 2; continue; }
          j++;
          break;
        }
        j++;
      }
      out += '?';
      i = Math.min(j, n);
      continue;
    }
    // quoted identifiers: kept
    if (c === '"' || c === '`' || (c === '[' && dialect === 'standard' && false)) {
      const end = query.indexOf(c, i + 1);
      const j = end < 0 ? n : end + 1;
      out += query.slice(i, j);
      i = j;
      continue;
    }
    // dollar quoting: $$…$$ or $tag$…$tag$ (a placeholder is $ and digits)
    if (c === '$' && !isIdent(query[i - 1])) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(query.slice(i, i + 66));
      if (tag) {
        const end = query.indexOf(tag[0], i + tag[0].length);
        out += '?';
        i = end < 0 ? n : end + tag[0].length;
        continue;
      }
    }
    // numbers, not part of an identifier or a placeholder ($1, @p1, :1)
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(next ?? ''))) {
      const prev = query[i - 1];
      if (!isIdent(prev) && prev !== ':' && prev !== '@') {
        const m = /^(?:0[xX][0-9a-fA-F_]+|[0-9_]*\.?[0-9_]+(?:[eE][+-]?[0-9]+)?|[0-9_]+\.)/.exec(query.slice(i));
        const len = m ? m[0].length : 1;
        // a number running into letters is an identifier's tail, not possible here: 1abc → ?abc is still value-free
        out += '?';
        i += len;
        continue;
      }
    }
    // an identifier, keyword or placeholder: copied whole so that its digits stay
    if (isIdent(c)) {
      let j = i + 1;
      while (j < n && isIdent(query[j])) j++;
      out += query.slice(i, j);
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

/** The operation and the table of a query, as far as a simple statement names them. */
export interface SqlSummary {
  /** The first keyword, upper case (`SELECT`, `INSERT`, …); absent for an empty or multi-statement text. */
  operation?: string;
  /** The one table a simple statement works on, as written (`items`, `public.items`); absent when there is none or several. */
  collection?: string;
}

interface Token { kind: 'word' | 'quoted' | 'punct'; text: string }

/** Tokens of the sanitised text (so no literal can reach them). */
function tokens(sanitized: string): Token[] {
  const out: Token[] = [];
  const re = /\s+|([\p{L}_][\p{L}\p{N}_$]*)|("[^"]*"|`[^`]*`)|(.)/gsu;
  for (const m of sanitized.matchAll(re)) {
    if (m[1] !== undefined) out.push({ kind: 'word', text: m[1] });
    else if (m[2] !== undefined) out.push({ kind: 'quoted', text: m[2] });
    else if (m[3] !== undefined) out.push({ kind: 'punct', text: m[3] });
  }
  return out;
}

const TABLE_AFTER: Record<string, string[]> = {
  INSERT: ['INTO'],
  DELETE: ['FROM'],
  UPDATE: [],
  TRUNCATE: [],
  CREATE: ['TABLE'],
  DROP: ['TABLE'],
  ALTER: ['TABLE'],
};
const CREATE_DROP_OPTIONAL = new Set(['IF', 'NOT', 'EXISTS', 'TEMP', 'TEMPORARY', 'UNLOGGED', 'ONLY', 'IGNORE', 'OR', 'REPLACE', 'LOW_PRIORITY', 'TABLE']);
/** Statement keywords of the dialects: the first word of a query names its operation only when it is one of them. */
const STATEMENTS = new Set([
  'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'UPSERT', 'REPLACE', 'WITH', 'VALUES', 'TABLE',
  'CREATE', 'DROP', 'ALTER', 'TRUNCATE', 'RENAME', 'COMMENT', 'GRANT', 'REVOKE',
  'BEGIN', 'START', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'END', 'ABORT',
  'CALL', 'EXEC', 'EXECUTE', 'PREPARE', 'DEALLOCATE', 'DO', 'EXPLAIN', 'ANALYZE', 'VACUUM', 'REINDEX',
  'SHOW', 'SET', 'RESET', 'USE', 'LOCK', 'UNLOCK', 'COPY', 'LISTEN', 'NOTIFY', 'UNLISTEN',
  'DECLARE', 'FETCH', 'MOVE', 'CLOSE', 'PRAGMA', 'ATTACH', 'DETACH', 'CHECKPOINT', 'CLUSTER', 'REFRESH', 'DESCRIBE',
]);
const JOINS = new Set(['JOIN', 'INNER', 'LEFT', 'RIGHT', 'FULL', 'CROSS', 'NATURAL', 'OUTER', 'LATERAL']);

/** Reads a possibly qualified table name (`a`, `s.a`, `"s"."a"`) at `i`; undefined when there is none. */
function tableAt(t: Token[], i: number): { name: string; next: number } | undefined {
  let name = '';
  let j = i;
  for (;;) {
    const tok = t[j];
    if (!tok || tok.kind === 'punct') return undefined;
    name += tok.text;
    j++;
    if (t[j]?.text === '.' ) { name += '.'; j++; continue; }
    return { name, next: j };
  }
}

/** `db.operation.name` and `db.collection.name` of a query (sanitised or not: only the sanitised form is looked at). */
export function summarizeSql(query: string, dialect: SqlDialect = 'standard'): SqlSummary {
  const t = tokens(sanitizeSql(query, dialect));
  // one statement only: a trailing ';' is fine
  const semi = t.findIndex((x) => x.text === ';');
  if (semi >= 0 && semi < t.length - 1) return {};
  if (semi >= 0) t.length = semi;
  const first = t[0];
  if (!first || first.kind !== 'word') return {};
  const operation = first.text.toUpperCase();
  // a misspelt keyword (a syntax error) names no operation
  if (!STATEMENTS.has(operation)) return {};
  // a statement with a sub-query, a CTE or a union works on several tables
  const words = t.filter((x) => x.kind === 'word').map((x) => x.text.toUpperCase());
  if (operation === 'WITH' || words.filter((w) => w === 'SELECT').length > (operation === 'SELECT' ? 1 : 0) || words.includes('UNION')) return { operation };
  let at: number | undefined;
  if (operation === 'SELECT') {
    const from = t.findIndex((x) => x.kind === 'word' && x.text.toUpperCase() === 'FROM');
    if (from < 0) return { operation };
    at = from + 1;
  } else if (operation in TABLE_AFTER) {
    let j = 1;
    const need = TABLE_AFTER[operation]!;
    if (operation === 'CREATE' || operation === 'DROP' || operation === 'ALTER') {
      if (!t.slice(1, 6).some((x) => x.kind === 'word' && x.text.toUpperCase() === 'TABLE')) return { operation };
    }
    while (t[j] && t[j]!.kind === 'word' && (need.includes(t[j]!.text.toUpperCase()) || CREATE_DROP_OPTIONAL.has(t[j]!.text.toUpperCase()))) j++;
    at = j;
  } else {
    return { operation };
  }
  const table = tableAt(t, at);
  if (!table) return { operation };
  const after = t[table.next];
  // several tables: a comma list or a join
  const rest = t.slice(table.next).map((x) => x.text.toUpperCase());
  if (operation === 'SELECT' && (after?.text === ',' || rest.some((w) => JOINS.has(w)))) return { operation };
  if (operation === 'UPDATE' && rest.includes('FROM')) return { operation };
  if (operation === 'DELETE' && rest.includes('USING')) return { operation };
  return { operation, collection: table.name };
}
