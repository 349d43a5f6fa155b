/**
 * The unstable ("incubating") OpenTelemetry semantic conventions gotrail
 * uses, copied as `@opentelemetry/semantic-conventions` recommends for
 * runtime code: its incubating entry point changes in minor versions, and
 * importing it keeps every experimental name resident (~4 MiB of the agent's
 * heap for the couple of dozen used here). Stable names are imported from the
 * package. test/spans/semconv.test.ts checks each copy against the package.
 */

export const ATTR_HOST_NAME = 'host.name' as const;
export const ATTR_PROCESS_EXECUTABLE_NAME = 'process.executable.name' as const;
export const ATTR_PROCESS_EXECUTABLE_PATH = 'process.executable.path' as const;
export const ATTR_PROCESS_PID = 'process.pid' as const;
export const ATTR_PROCESS_RUNTIME_NAME = 'process.runtime.name' as const;
export const ATTR_PROCESS_RUNTIME_VERSION = 'process.runtime.version' as const;

export const ATTR_RPC_GRPC_STATUS_CODE = 'rpc.grpc.status_code' as const;
export const ATTR_RPC_SERVICE = 'rpc.service' as const;
export const ATTR_RPC_SYSTEM = 'rpc.system' as const;
export const RPC_SYSTEM_VALUE_GRPC = 'grpc' as const;

export const DB_SYSTEM_NAME_VALUE_OTHER_SQL = 'other_sql' as const;
export const DB_SYSTEM_NAME_VALUE_SQLITE = 'sqlite' as const;
export const DB_SYSTEM_NAME_VALUE_REDIS = 'redis' as const;

export const ATTR_MESSAGING_CONSUMER_GROUP_NAME = 'messaging.consumer.group.name' as const;
export const ATTR_MESSAGING_DESTINATION_NAME = 'messaging.destination.name' as const;
export const ATTR_MESSAGING_DESTINATION_PARTITION_ID = 'messaging.destination.partition.id' as const;
export const ATTR_MESSAGING_KAFKA_MESSAGE_KEY = 'messaging.kafka.message.key' as const;
export const ATTR_MESSAGING_KAFKA_OFFSET = 'messaging.kafka.offset' as const;
export const ATTR_MESSAGING_OPERATION_NAME = 'messaging.operation.name' as const;
export const ATTR_MESSAGING_OPERATION_TYPE = 'messaging.operation.type' as const;
export const ATTR_MESSAGING_SYSTEM = 'messaging.system' as const;
export const MESSAGING_OPERATION_TYPE_VALUE_RECEIVE = 'receive' as const;
export const MESSAGING_OPERATION_TYPE_VALUE_SEND = 'send' as const;
export const MESSAGING_SYSTEM_VALUE_KAFKA = 'kafka' as const;
