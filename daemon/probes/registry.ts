/** Every probe gotrail knows; adding an instrumented package adds one line here. */
import type { ProbeDescriptor } from './types.ts';
import { httpServerProbe } from './go/net/http/server/descriptor.ts';
import { httpClientProbe } from './go/net/http/client/descriptor.ts';
import { grpcServerProbe } from './go/google.golang.org/grpc/server/descriptor.ts';
import { grpcClientProbe } from './go/google.golang.org/grpc/client/descriptor.ts';
import { gorillaMuxProbe } from './go/github.com/gorilla/mux/descriptor.ts';
import { chiProbe } from './go/github.com/go-chi/chi/v5/descriptor.ts';
import { ginProbe } from './go/github.com/gin-gonic/gin/descriptor.ts';
import { otelApiProbe } from './go/go.opentelemetry.io/otel/descriptor.ts';

import { goRedisProbe } from './go/github.com/redis/go-redis/v9/descriptor.ts';
import { kafkaWriterProbe } from './go/github.com/segmentio/kafka-go/writer/descriptor.ts';
import { kafkaReaderProbe } from './go/github.com/segmentio/kafka-go/reader/descriptor.ts';
import { runtimeProbe } from './go/runtime/descriptor.ts';
import { sqlProbe } from './go/database/sql/descriptor.ts';

export const probes: readonly ProbeDescriptor[] = [
  httpServerProbe, httpClientProbe, grpcServerProbe, grpcClientProbe, sqlProbe, goRedisProbe,
  kafkaWriterProbe, kafkaReaderProbe,
  // goroutine ancestry: state for the client probes, no spans of its own
  runtimeProbe,
  // routers: http.route of the net/http server's spans
  gorillaMuxProbe, chiProbe, ginProbe,
  // spans the program makes through the OpenTelemetry API
  otelApiProbe,
];

export function probeById(id: string): ProbeDescriptor | undefined {
  return probes.find((p) => p.id === id);
}
