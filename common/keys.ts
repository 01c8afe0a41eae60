import type { ActorAddress } from './actor-ops.js';
import { DNS_LABEL_PATTERN } from './api/patterns.js';
import { EdgeError } from './errors.js';

// Every string key the system builds from names, and its inverse, in one place: KV keys
// (the shapes are wire format, read by every agent and the operator of any version still
// running, so they never change), the `namespace/name` refs the agent and the operator use
// among themselves, and actor keys. Builders take names that are already valid and do not
// check them (they sit on hot paths); parsers take strings from outside (KV, URLs, maps
// filled elsewhere) and throw MalformedKeyError unless every part is valid.
//
// Names in keys are DNS labels (the CRDs' CEL rule, api/crd.ts) so '.' and '/' never occur
// inside a part; actor ids are 64 lowercase hex.

/** A key that does not have the shape its parser expects. */
export class MalformedKeyError extends EdgeError {
  constructor(readonly kind: string, readonly key: string, readonly expected: string) {
    super(`malformed ${kind} ${JSON.stringify(key)}: expected ${expected}`, { context: { key } });
  }
}

/** An EdgeWorker or a DurableActor (the actor class): a namespaced object of ours. */
export interface ObjectRef { namespace: string; name: string }
/** An agent as its presence and report keys name it: `agent` is the token form (agentToken). */
export interface AgentRef { region: string; agent: string }

const DNS_LABEL = new RegExp(DNS_LABEL_PATTERN);
/** An actor id's string form (bindings/actor-id.ts makes them). */
export const ACTOR_ID_PATTERN = /^[0-9a-f]{64}$/;
/** A NATS key or subject token: no '.', '*', '>' or spaces. */
const TOKEN = /^[A-Za-z0-9_-]+$/;

/** An RFC 1123 label: the API's pattern and its 63-character bound. */
export const isDnsLabel = (s: string): boolean => s.length <= 63 && DNS_LABEL.test(s);
export const isActorId = (s: string): boolean => ACTOR_ID_PATTERN.test(s);
const isToken = (s: string): boolean => TOKEN.test(s);

/** NATS key and subject tokens cannot hold '.', '*', '>' or spaces: an agent name in one. */
export const agentToken = (agent: string): string => agent.replace(/[^A-Za-z0-9_-]/g, '_');

function parts(kind: string, key: string, sep: string, tests: readonly ((s: string) => boolean)[], expected: string): string[] {
  const p = key.split(sep);
  if (p.length !== tests.length || p.some((s, i) => !tests[i]!(s))) throw new MalformedKeyError(kind, key, expected);
  return p;
}

function objectRefOf(kind: string, key: string, sep: string): ObjectRef {
  const [namespace, name] = parts(kind, key, sep, [isDnsLabel, isDnsLabel], `<namespace>${sep}<name>, both DNS labels`);
  return { namespace: namespace!, name: name! };
}

function addressOf(kind: string, key: string, sep: string): ActorAddress {
  const [namespace, actor, id] = parts(kind, key, sep, [isDnsLabel, isDnsLabel, isActorId], `<namespace>${sep}<actor>${sep}<id>: DNS labels and 64 lowercase hex`);
  return { namespace: namespace!, actor: actor!, id: id! };
}

/** `<namespace>/<name>`: how the agent names a worker it serves (WorkerDefinition.key, LogLine.worker). */
export const workerRef = (namespace: string, name: string): string => `${namespace}/${name}`;
export const parseWorkerRef = (ref: string): ObjectRef => objectRefOf('worker ref', ref, '/');

/**
 * The namespace of a worker ref or an actor instance key (what comes before the first "/"),
 * unchecked: for hot paths handed refs that workerRef / actorInstanceKey made.
 */
export const refNamespace = (ref: string): string => ref.slice(0, ref.indexOf('/'));

/** `<namespace>.<name>`: a worker's key in KV `edge-workers` and in AgentReport.workers. */
export const workerKey = (namespace: string, name: string): string => `${namespace}.${name}`;
export const parseWorkerKey = (key: string): ObjectRef => objectRefOf('worker key', key, '.');

/** `<namespace>/<name>` of a DurableActor: how the agent names an actor class among its configs. */
export const actorClassRef = (namespace: string, name: string): string => `${namespace}/${name}`;
export const parseActorClassRef = (ref: string): ObjectRef => objectRefOf('actor class ref', ref, '/');

/** `<namespace>.<name>` of a DurableActor: its key in KV `edge-actors` and in AgentReport.actors. */
export const actorClassKey = (namespace: string, name: string): string => `${namespace}.${name}`;
export const parseActorClassKey = (key: string): ObjectRef => objectRefOf('actor class key', key, '.');

/**
 * `<namespace>/<actor>/<id>`: one actor; the point hashed on the ring (so every agent must
 * spell it the same), the host's activation key, the peer URL's path and logs' `actor`.
 */
export const actorInstanceKey = (namespace: string, actor: string, id: string): string => `${namespace}/${actor}/${id}`;
export const actorInstanceKeyOf = (a: ActorAddress): string => actorInstanceKey(a.namespace, a.actor, a.id);
export const parseActorInstanceKey = (key: string): ActorAddress => addressOf('actor key', key, '/');
/** The actor instance key's prefix shared by every actor of one class. */
export const actorClassPrefix = (namespace: string, actor: string): string => `${actorClassRef(namespace, actor)}/`;

/** `<namespace>.<actor>.<id>`: one actor's alarm in KV `edge-actor-alarms`. */
export const alarmKey = (namespace: string, actor: string, id: string): string => `${namespace}.${actor}.${id}`;
export const parseAlarmKey = (key: string): ActorAddress => addressOf('alarm key', key, '.');

/** `<region>.<agent token>`: an agent's key in KV `edge-agents` and `edge-agent-reports`. */
export const agentKey = (region: string, agent: string): string => `${region}.${agentToken(agent)}`;
export function parseAgentKey(key: string): AgentRef {
  const [region, agent] = parts('agent key', key, '.', [isDnsLabel, isToken], '<region>.<agent>: a DNS label and a NATS token');
  return { region: region!, agent: agent! };
}

/**
 * For keys read from a shared bucket that anyone could have written: the parsed key, or
 * undefined when it is malformed (other errors still throw).
 */
export function parseOrSkip<T>(parse: (key: string) => T, key: string): T | undefined {
  try {
    return parse(key);
  } catch (err) {
    if (err instanceof MalformedKeyError) return undefined;
    throw err;
  }
}
