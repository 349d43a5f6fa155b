/**
 * What the offsets database holds, per module: the fields the probes declare
 * (each descriptor's `fields`, daemon/probes/go/<import path>/descriptor.ts;
 * each under the module whose versions select its offset, `fieldModule`: a
 * gRPC probe's `net.*` fields are std's), plus the goroutine id every probe needs, and the few fields kept for a probe
 * that is coming (`kept`, each with its reason). This file adds what the
 * generator needs to build programs that link those structs; it lists no
 * field a probe reads. test/offsets/fields.test.ts fails when the data files
 * hold other fields, or lack one of these.
 */
import { GOID_FIELD } from '../daemon/agent/binary-plan.ts';
import { probes } from '../daemon/probes/registry.ts';
import { fieldModule, type ProbeDescriptor } from '../daemon/probes/types.ts';

/** What the generator needs to know to produce offsets for one module. */
export interface ModuleSpec {
  /** `std` for the standard library, else the module path. */
  module: string;
  /**
   * Module versions to build from the module proxy (third-party modules only;
   * the standard library is built once per available Go toolchain instead).
   * Without `v` prefix, like the data files. Default: none (reference data only).
   */
  versions?: string[];
  /** Import paths the probe program imports. */
  imports: string[];
  /**
   * Go statements that make the linker keep the code (and so the DWARF types)
   * of the fields' structs. They are compiled but never executed.
   */
  keep: string[];
  /**
   * Fields no probe reads yet, kept for one that is coming: `pkg.Struct.field`
   * → which probe will read it and why. Move a field into its probe's
   * descriptor when the probe lands.
   */
  kept?: Record<string, string>;
}

/** A module's spec with every field the database holds for it. */
export interface ModuleFields extends ModuleSpec {
  /** `pkg.Struct.field` → who reads it (documentation for reviewers and COVERAGE.md). */
  fields: Record<string, string>;
}

const GRPC_SERVER = 'gRPC server probe (google.golang.org/grpc.(*Server).handleStream)';
const GRPC_CLIENT = 'gRPC client probe (google.golang.org/grpc.(*ClientConn).Invoke)';
const GRPC = 'google.golang.org/grpc';

/** The modules of the database, in the order COVERAGE.md lists them. */
const MODULE_SPECS: readonly ModuleSpec[] = [
  {
    module: 'std',
    imports: ['database/sql', 'net', 'net/http', 'net/url'],
    keep: [
      '_ = http.ListenAndServe("", nil)', '_, _ = url.Parse("")', '_, _ = http.Get("")', '_, _ = net.Dial("", "")', '_ = http.ListenAndServeTLS("", "", "", nil)',
      'db, _ := sql.Open("", "")', '_, _ = db.Exec("")', 'st, _ := db.Prepare("")', '_, _ = st.Query()',
      'cn, _ := db.Conn(nil)', '_, _ = cn.ExecContext(nil, "")', 'tx, _ := db.Begin()', '_, _ = tx.Exec("")',
    ],
  },
  {
    module: GRPC,
    // Spread over the versions the module proxy serves that the toolchains here build (v1.20.0
    // and later; v1.64.1 is one the gRPC probes' tests build), cross-checked with the reference; then every version from v1.82.0 on, where
    // headerFrame gave way to clientHeaders in a patch release (v1.82.1) and the reference lacks
    // one or the other, including the -dev tags cut from the main branch, which kept headerFrame
    // until v1.85.0-dev; v1.83.2 and later are newer than the reference snapshot. v1.86.0-dev was
    // the newest version on the module proxy: with it the newest three minor lines are known for
    // every field, which is what carrying offsets forward to newer versions needs.
    versions: [
      '1.20.0', '1.40.0', '1.50.1', '1.60.1', '1.64.1', '1.70.0',
      '1.82.0', '1.82.1', '1.83.0-dev', '1.83.0', '1.83.1', '1.83.2', '1.84.0-dev', '1.84.0', '1.85.0-dev', '1.85.0', '1.86.0-dev',
    ],
    imports: ['context', GRPC, `${GRPC}/peer`, `${GRPC}/status`],
    keep: [
      '_ = grpc.NewServer().Serve(nil)',
      'cc, _ := grpc.Dial("")',
      '_ = cc.Invoke(context.Background(), "", nil, nil)',
      '_, _ = peer.FromContext(context.Background())',
      '_ = status.Convert(nil)',
    ],
    kept: {
      [`${GRPC}/internal/transport.http2Client.nextID`]: `${GRPC_CLIENT}: id of the stream being opened, to find its headers`,
      [`${GRPC}/internal/transport.Stream.ctx`]: `${GRPC_SERVER}: the stream's context (incoming metadata)`,
      [`${GRPC}/internal/transport.http2Server.peer`]: `${GRPC_SERVER}: the connection's addresses (v1.60.0 and later)`,
      [`${GRPC}/peer.Peer.LocalAddr`]: `${GRPC_SERVER}: the server's address, for server.address and server.port (v1.60.0 and later)`,
    },
  },
  // routers (http.route): the versions the tests build; other versions' offsets come from the binaries' type metadata
  {
    module: 'github.com/gorilla/mux',
    versions: ['1.8.1'],
    imports: ['net/http', 'github.com/gorilla/mux'],
    keep: ['_ = http.ListenAndServe("", mux.NewRouter())'],
  },
  {
    module: 'github.com/go-chi/chi/v5',
    versions: ['5.5.0'],
    imports: ['net/http', 'github.com/go-chi/chi/v5'],
    keep: ['_ = http.ListenAndServe("", chi.NewRouter())'],
  },
  {
    module: 'github.com/gin-gonic/gin',
    versions: ['1.12.0'],
    imports: ['github.com/gin-gonic/gin'],
    keep: ['_ = gin.New().Run()'],
  },
  {
    module: 'github.com/redis/go-redis/v9',
    // The first v9 release, the newest that Go 1.19 builds (v9.7.3, which the
    // probe's tests build), and from v9.17 on (the newest served when written:
    // v9.23.0, also tested).
    versions: ['9.0.0', '9.5.1', '9.7.3', '9.17.3', '9.20.0', '9.23.0'],
    imports: ['context', 'github.com/redis/go-redis/v9'],
    keep: [
      'rdb := redis.NewClient(&redis.Options{})',
      '_ = rdb.Get(context.Background(), "").Err()',
      '_, _ = rdb.Pipelined(context.Background(), func(redis.Pipeliner) error { return nil })',
    ],
  },
  {
    module: 'github.com/segmentio/kafka-go',
    // the version the tests build (Go 1.19 builds it too), the release
    // before it, and the oldest and newest 0.4 releases the module proxy
    // lists from 0.4.42 on
    versions: ['0.4.42', '0.4.46', '0.4.47', '0.4.51'],
    imports: ['context', 'github.com/segmentio/kafka-go'],
    keep: [
      '_ = (&kafka.Writer{}).WriteMessages(context.Background(), kafka.Message{Headers: []kafka.Header{{}}})',
      '_, _ = kafka.NewReader(kafka.ReaderConfig{}).ReadMessage(context.Background())',
    ],
  },
  // a database/sql driver's struct (the DSN pgx stdlib's connector keeps): the
  // versions the tests build (v5.4.3 with Go 1.19); others from type metadata
  {
    module: 'github.com/jackc/pgx/v5',
    versions: ['5.4.3', '5.13.0'],
    imports: ['database/sql', 'github.com/jackc/pgx/v5/stdlib'],
    keep: ['db, _ := sql.Open("pgx", "")', '_, _ = db.Exec("")', '_ = stdlib.GetDefaultDriver()'],
  },
  // the OpenTelemetry API bridge's attributes: the versions the tests build and the first bridged one
  {
    module: 'go.opentelemetry.io/otel',
    versions: ['1.35.0', '1.46.0'],
    imports: ['go.opentelemetry.io/otel/attribute'],
    keep: ['_ = []attribute.KeyValue{attribute.String("", "")}'],
  },
];


/**
 * The fields of `module` with who reads them: the goroutine id (std), then the
 * fields of every probe of that module in registry order, then `kept`.
 */
export function moduleFields(spec: ModuleSpec, all: readonly ProbeDescriptor[] = probes): Record<string, string> {
  const readers = new Map<string, string[]>();
  if (spec.module === 'std') readers.set(GOID_FIELD, ['every probe: in-flight state is keyed by {tgid, goid}']);
  for (const p of all) {
    for (const [field, f] of Object.entries(p.fields)) {
      if (fieldModule(p, field) !== spec.module) continue;
      const list = readers.get(field) ?? [];
      list.push(`${p.id} probe: ${f.reads}${f.optional === undefined ? '' : ' (optional)'}`);
      readers.set(field, list);
    }
  }
  for (const [field, why] of Object.entries(spec.kept ?? {})) {
    if (readers.has(field)) throw new Error(`offsets-db/fields.ts: ${field} is kept for a coming probe, but ${readers.get(field)!.join('; ')} already reads it: remove it from kept`);
    readers.set(field, [`kept: ${why}`]);
  }
  return Object.fromEntries([...readers].map(([field, who]) => [field, who.join('; ')]));
}

/** Modules a probe reads fields of but that have no spec here: the generator could not build them. */
export function modulesWithoutSpec(all: readonly ProbeDescriptor[] = probes): string[] {
  return [...new Set(all.flatMap((p) => Object.keys(p.fields).map((f) => fieldModule(p, f))))].filter((m) => !MODULE_SPECS.some((s) => s.module === m));
}

/** All modules and their fields, in the order the data files list them. */
export const MODULE_FIELDS: readonly ModuleFields[] = MODULE_SPECS.map((spec) => ({ ...spec, fields: moduleFields(spec) }));

/** The field list of one module, or `undefined` when no probe needs that module. */
export function fieldsOf(module: string): ModuleFields | undefined {
  return MODULE_FIELDS.find((m) => m.module === module);
}
