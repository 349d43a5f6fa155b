/**
 * A real Apache Kafka broker for a test suite: KRaft mode, one node acting
 * as broker and controller, on loopback, its log in a temporary directory,
 * run on the machine's Java 17 from the server jars (Kafka 3.9, see kafka/pom.xml for why not 4.x) set-up fetched from
 * Maven Central (build/kafka/libs: org.apache.kafka:kafka_2.13 and its
 * runtime dependencies, see kafka/pom.xml). Topics are not created
 * automatically (`auto.create.topics.enable=false`), so a write to a
 * missing topic fails as it does on most production clusters: programs
 * create the topics they use. `stop()` stops it and removes its directory.
 *
 * ```ts
 * const kafka = await startKafka();   // kafka.bootstrap: '127.0.0.1:PORT'
 * …
 * await kafka.stop();
 * ```
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { repoRoot } from '../agent-process.ts';
import { freePort } from './redis.ts';

/** Where set-up puts the broker's jars. */
export const KAFKA_LIBS = join(repoRoot, 'build', 'kafka', 'libs');
const JAVA = '/usr/lib/jvm/java-17-openjdk-amd64/bin/java';
/** How long the broker may take to listen: a JVM on a busy 2-core machine (ms). */
const START_MS = 90_000;

export interface KafkaBroker {
  /** `127.0.0.1:PORT`, the PLAINTEXT listener. */
  bootstrap: string;
  port: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Why the broker cannot run here, or undefined when it can. */
export function kafkaSkipReason(): string | undefined {
  if (!existsSync(JAVA)) return `needs Java 17 (${JAVA}): run bash deploy/setup.sh`;
  if (!existsSync(join(KAFKA_LIBS, 'kafka_2.13-3.9.1.jar'))) return `needs the Kafka broker's jars in ${KAFKA_LIBS}: run bash deploy/setup.sh`;
  return undefined;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** Formats a fresh log directory and starts the broker; resolves once its listener accepts connections. */
export async function startKafka(): Promise<KafkaBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-kafka-'));
  const [port, controller] = [await freePort(), await freePort()];
  const props = join(dir, 'server.properties');
  writeFileSync(props, [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controller}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    `log.dirs=${join(dir, 'log')}`,
    'offsets.topic.replication.factor=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    'auto.create.topics.enable=false',
    'num.partitions=1',
    '',
  ].join('\n'));
  const cp = `${KAFKA_LIBS}/*`;
  // a KRaft cluster id is 16 random bytes in URL-safe base64 without padding
  // one that starts with '-' would be read as an option by the storage tool
  // (1 in 64): drawn again, as Kafka's own Uuid.randomUuid does
  let clusterId = randomBytes(16).toString('base64url');
  while (clusterId.startsWith('-')) clusterId = randomBytes(16).toString('base64url');
  // not execFileSync: the storage tool's JVM takes seconds on a busy machine,
  // during which the caller's loop (other servers' readiness, an agent) would stand still
  try {
    await promisify(execFile)(JAVA, ['-cp', cp, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props]);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const child = spawn(JAVA, ['-Xms128m', '-Xmx512m', '-cp', cp, 'kafka.Kafka', props], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killOnExit = (): void => { child.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
  child.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((r) => {
        const hard = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.once('exit', () => { clearTimeout(hard); r(); });
        child.kill('SIGTERM');
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + START_MS;
  while (!(await portOpen(port))) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`the Kafka broker exited (code ${child.exitCode}):\n${log}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await stop();
      throw new Error(`the Kafka broker did not listen on ${port} in ${START_MS / 1000} s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { bootstrap: `127.0.0.1:${port}`, port, child, stop };
}
