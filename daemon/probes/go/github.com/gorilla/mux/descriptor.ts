/**
 * github.com/gorilla/mux: the path template of the matched route becomes the
 * request's `http.route` (on the net/http SERVER span, which it also names).
 * No span of its own.
 */
import { BpfMaps, BpfPrograms, GorillaMuxFlags, encodeGorillaMuxConfig } from '../../../../../generated/layouts.ts';
import type { ProbeDescriptor } from '../../../../types.ts';

const F = {
  conf: 'github.com/gorilla/mux.Route.routeConf',
  regexp: 'github.com/gorilla/mux.routeConf.regexp',
  path: 'github.com/gorilla/mux.routeRegexpGroup.path',
  template: 'github.com/gorilla/mux.routeRegexp.template',
} as const;

export const gorillaMuxProbe: ProbeDescriptor = {
  id: 'github.com/gorilla/mux',
  module: 'github.com/gorilla/mux',
  goPackage: 'github.com/gorilla/mux',
  description: 'gorilla/mux routes (http.route of net/http SERVER spans)',
  functions: [
    {
      symbol: 'github.com/gorilla/mux.requestWithRoute',
      entryProgram: BpfPrograms.gt_gorilla_mux_route,
      absentMeans: 'this program never routes requests with a mux.Router, or its gorilla/mux is older than v1.8.1 (which names that step setCurrentRoute)',
    },
  ],
  fields: {
    [F.conf]: { reads: "the matched route's configuration (embedded)" },
    [F.regexp]: { reads: "the route's regexps" },
    [F.path]: { reads: "the route's path regexp" },
    [F.template]: { reads: 'http.route: the path template' },
  },
  configMap: BpfMaps.gt_gorilla_mux_config,
  stateMaps: [],
  encodeConfig(o) {
    return encodeGorillaMuxConfig({
      route_regexp: (o[F.conf] ?? 0) + (o[F.regexp] ?? 0),
      group_path: o[F.path] ?? 0,
      regexp_template: o[F.template] ?? 0,
      flags: GorillaMuxFlags.GT_GORILLA_MUX_ENABLED,
    });
  },
};
