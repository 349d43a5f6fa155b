/**
 * Libraries a Go program may use for its requests and messages that gotrail
 * has no probe for yet: `gotrail inspect` names them when a binary links one
 * (from its buildinfo module list), so that a user does not wait for spans
 * that cannot come.
 */
import type { GoModule } from '../analysis/buildinfo.ts';
import type { ProbeDescriptor } from './types.ts';

/** Module path (without a major-version suffix) → what its calls are. */
export const UNTRACED_LIBRARIES: Readonly<Record<string, string>> = {
  'google.golang.org/grpc': 'gRPC calls',
  'github.com/valyala/fasthttp': 'HTTP requests served or sent by fasthttp (not net/http)',
  'github.com/segmentio/kafka-go': 'Kafka messages',
  'github.com/IBM/sarama': 'Kafka messages',
  'github.com/Shopify/sarama': 'Kafka messages',
  'github.com/confluentinc/confluent-kafka-go': 'Kafka messages',
  'github.com/nats-io/nats.go': 'NATS messages',
  'github.com/rabbitmq/amqp091-go': 'AMQP messages',
  'github.com/redis/go-redis': 'Redis commands',
  'github.com/go-redis/redis': 'Redis commands',
  'go.mongodb.org/mongo-driver': 'MongoDB operations',
  // its stdlib package runs under database/sql, which is traced; its own API is not
  'github.com/jackc/pgx': 'PostgreSQL queries through pgx\'s own API (pgx.Conn, pgxpool; those through database/sql are traced)',
};

export interface UntracedLibrary {
  module: string;
  version: string;
  /** what goes untraced */
  calls: string;
}

/** The modules of `modules` that are known libraries without a probe among `probes`. */
export function untracedLibraries(modules: readonly GoModule[], probes: readonly ProbeDescriptor[]): UntracedLibrary[] {
  const probed = new Set(probes.map((p) => p.module));
  const out: UntracedLibrary[] = [];
  for (const m of modules) {
    const base = m.path.replace(/\/v\d+$/, '');
    const calls = UNTRACED_LIBRARIES[base];
    if (calls && !probed.has(m.path) && !probed.has(base)) out.push({ module: m.path, version: m.version, calls });
  }
  return out;
}
