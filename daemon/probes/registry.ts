/** Every probe gotrail knows; adding an instrumented package adds one line here. */
import type { ProbeDescriptor } from './types.ts';
import { httpServerProbe } from './go/net/http/server/descriptor.ts';
import { httpClientProbe } from './go/net/http/client/descriptor.ts';
import { grpcServerProbe } from './go/google.golang.org/grpc/server/descriptor.ts';
import { grpcClientProbe } from './go/google.golang.org/grpc/client/descriptor.ts';
import { runtimeProbe } from './go/runtime/descriptor.ts';

export const probes: readonly ProbeDescriptor[] = [httpServerProbe, httpClientProbe, grpcServerProbe, grpcClientProbe, runtimeProbe];

export function probeById(id: string): ProbeDescriptor | undefined {
  return probes.find((p) => p.id === id);
}
