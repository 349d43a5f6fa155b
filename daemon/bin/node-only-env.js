// Preloaded by the launcher (node --import) before the CLI's modules load.
//
// The launcher sets variables that tune Node's own process (MALLOC_ARENA_MAX,
// NODE_COMPILE_CACHE), read by glibc and Node as the process starts and not
// after; it names them in GOTRAIL_NODE_ONLY_ENV. Taken out of the environment
// here, they do not reach the programs the agent starts (the calibration
// helper, the demo's services and its PostgreSQL, Redis and Kafka servers),
// which inherit process.env. Plain JavaScript, as the other preload.
const names = process.env.GOTRAIL_NODE_ONLY_ENV;
if (names !== undefined) {
  for (const name of names.split(' ')) if (name) delete process.env[name];
  delete process.env.GOTRAIL_NODE_ONLY_ENV;
}
