#!/usr/bin/env node
/**
 * gotrail command line: `gotrail run`, `gotrail inspect`, `gotrail demo`.
 */
import { CliError, EXIT } from './exit-codes.ts';
import { AGENT_VERSION } from '../spans/resource.ts';

const help = `gotrail ${AGENT_VERSION} — traces every Go program on this host with eBPF, no changes to the programs.

Usage: gotrail <command> [options]

Commands:
  run                 run the agent (trace Go processes, export spans over OTLP)
  inspect <bin|pid>   show what gotrail would trace in a binary, and why not
  demo                trace sample Go systems (HTTP, gRPC, PostgreSQL, Redis, Kafka) and print their traces
  version             print the version

Run 'gotrail <command> --help' for a command's options.
`;

async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => void process.stdout.write(s);
  const [cmd, ...rest] = argv;
  // each command loads its own modules: the agent keeps none of inspect's or
  // demo's resident (demo's ES import of node:http alone loads Node's undici)
  switch (cmd) {
    case 'run':
      return (await import('./run.ts')).runAgent(rest, out);
    case 'inspect':
      return (await import('./inspect.ts')).runInspect(rest, out);
    case 'demo':
      return (await import('./demo.ts')).runDemo(rest, out);
    case 'version':
    case '--version':
      out(`gotrail ${AGENT_VERSION}\n`);
      return EXIT.OK;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      out(help);
      return cmd === undefined ? EXIT.USAGE : EXIT.OK;
    default:
      throw new CliError(`unknown command "${cmd}"\n\n${help}`, EXIT.USAGE);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof CliError) {
      process.stderr.write(`gotrail: ${e.message}\n`);
      process.exitCode = e.exitCode;
    } else if (e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      const cmd = process.argv[2];
      process.stderr.write(`gotrail: ${e.message}${cmd === 'run' || cmd === 'inspect' || cmd === 'demo' ? ` ('gotrail ${cmd} --help' lists the options)` : ''}\n`);
      process.exitCode = EXIT.USAGE;
    } else {
      process.stderr.write(`gotrail: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = EXIT.FAILED;
    }
  },
);
