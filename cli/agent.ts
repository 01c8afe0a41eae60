import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { DNS_LABEL_PATTERN } from '../common/api/index.js';
import { parseEgressRule } from '../common/egress.js';
import { createLogger } from '../common/log.js';
import { UsageError, parseFlags } from './flags.js';
import { natsCredentialsFrom } from '../common/nats-auth.js';
import { SecretSealer } from '../common/sealing.js';
import { DEFAULT_PRESENCE_TTL_MS } from '../common/nats.js';
import { DEFAULT_DRAIN_DELAY_MS, DEFAULT_DRAIN_TIMEOUT_MS, type AgentConfig, type RunningAgent } from '../node-agent/agent-config.js';
import { DEFAULT_IDLE_ISOLATE_MS, DEFAULT_MAX_ISOLATES_PER_WORKER } from '../node-agent/serving/defaults.js';
import { STANDALONE_REGION } from '../node-agent/control/defaults.js';
import { PIN_HOSTS_MODES } from '../node-agent/hosts/cpu-affinity.js';

// `edge agent --workers DIR ...` (standalone) or `edge agent --nats URL --region R --node N ...`
// (following the operator). This file only parses flags; node-agent/agent.ts builds the agent.

/** Isolate-host processes of `edge agent` unless --isolate-hosts says otherwise (docs/isolate-hosts.md). */
export const DEFAULT_ISOLATE_HOSTS = 2;

export const AGENT_USAGE = `usage: edge agent (--workers DIR [--region R] | --nats URL --region R --node N
                    [--nats-user USER] [--nats-password-file FILE] [--nats-ca FILE]
                    [--sealing-key-file FILE])
                  [--listen HOST:PORT] [--admin HOST:PORT] [--advertise URL]
                  [--agent-name NAME] [--presence-ttl-ms N] [--ai-url-template T]
                  [--peer-listen HOST:PORT] [--peer-advertise URL] [--actor-log-replicas N]
                  [--sql-snapshot-entries N]
                  [--max-body-mb N] [--pool-size N] [--max-isolates-per-worker N] [--idle-isolate-ms N]
                  [--max-ws-message-kb N] [--trusted-proxy CIDR]... [--egress-allow RULE]... [--dev-peer-token]
                  [--isolate-hosts N] [--isolate-host-spares N] [--no-cordon]
                  [--pin-hosts auto|on|off]
                  [--drain-delay-ms N] [--drain-timeout-ms N] [--dev-error-pages]

With --workers, serves every EdgeWorker manifest in DIR (reloading when it changes);
ConfigMaps, Secrets and DurableActors in DIR resolve configMapRef, secret and actor
bindings as the operator would. An ai binding reaches the model server the operator would
run for it in region R (default ${STANDALONE_REGION}), through --ai-url-template (a template without
{service} sends every ai binding to one server). There is no actor runtime without NATS:
env.<actor binding> is there, and its calls fail saying so.
With --nats, serves the workers the operator placed in region R, announces itself
(presence with a TTL), reports per-worker readiness and publishes each worker's console
output for \`edge logs\` (NATS subject edge.logs.<namespace>.<name>). Requests are routed by Host
header and path prefix. CF-Connecting-IP and X-Forwarded-* sent by a client are believed only
from a --trusted-proxy (a CIDR, an address or "unix"; repeatable; none by default). /metrics, /healthz, /readyz and /status are on the admin port.

NATS: --nats-user (or $EDGE_NATS_USER) with the password in --nats-password-file
($EDGE_NATS_PASSWORD_FILE) or $EDGE_NATS_PASSWORD; --nats-ca ($EDGE_NATS_CA) trusts that CA
for a tls:// server. --sealing-key-file ($EDGE_SEALING_KEY_FILE): the operator's key, to
open the Secret values it sealed; without it workers with secret bindings are not served.
--peer-listen: the port other agents forward actor calls to (keep it off the user-facing
network). With --nats, $EDGE_PEER_TOKEN is required (16 characters or more, the same on
every agent of the region); --dev-peer-token makes up a random one instead, which only
works for a region of one agent (\`edge dev\` hands one token to all its agents).
--admin: /metrics, /healthz, /readyz and /status; bind it where only the kubelet and
Prometheus reach it. The full /status (every tenant's workers and live actor ids) needs
\`Authorization: Bearer $EDGE_ADMIN_TOKEN\`; without the token it gives counts only.
--egress-allow: a destination every worker's fetch() may reach on top of its namespace's
egress policy (repeatable): an address, CIDR, host name or *.pattern, optionally with
:port (e.g. 127.0.0.1:8081, 10.0.0.0/8, db.example.internal:5432). Without one, a worker
reaches public unicast addresses only: no loopback, private, link-local or cluster ranges.
SIGTERM drains: /readyz says 503 at once and everything is still served for
--drain-delay-ms (default ${DEFAULT_DRAIN_DELAY_MS}: the time load balancers and Kubernetes endpoints take
to stop sending here); then actors are handed over to the region's other agents, the
listeners close once the requests they accepted are answered, and the agent exits. What
follows the delay is bounded by --drain-timeout-ms (default ${DEFAULT_DRAIN_TIMEOUT_MS}): past it what still
runs is cut (its connection closes; an actor not yet released goes to the next owner's claim).
Keep the pod's terminationGracePeriodSeconds above the two together.
--dev-error-pages: \`edge dev\`'s agents only, never in a cluster: a worker's uncaught
exception is answered with its message and stack (an HTML page to a browser), and a host
routed only in other regions with a 404 naming the worker and its regions.
--actor-log-replicas: JetStream replicas for actor state when this agent creates the
stream (use 3 on a NATS cluster: an acknowledged write then survives a server loss).
--sql-snapshot-entries N (default 1000): a SQLite-backed actor's log is snapshotted (its
database file) once this many statements were logged since the last snapshot, or 1 MiB
of them (or half the database, if more), or statements that took 300 ms to run, so a
new owner replays at most that much.
--pool-size N (default 4): isolates made ready before any worker asks for one, for the node:
each isolate host keeps N / --isolate-hosts of them (rounded up) and refills its own.
--idle-isolate-ms N (default ${DEFAULT_IDLE_ISOLATE_MS}): an isolate idle this long is disposed, unless it is
one of its worker's minWarmIsolates on a member of the worker's shard.
--isolate-hosts N (default ${DEFAULT_ISOLATE_HOSTS}): run tenants' isolates in N child processes,
namespaces spread over them, this process keeping only the HTTP front, the admin port and
the presence; a V8 fatal error then takes down one host's namespaces (answered 503 until it
is restarted, in under a second), never the agent. 0 runs them in this process.
Host i listens for actor calls on the --peer-listen port + 1 + i (any free port when that
is 0). --isolate-host-spares N: pre-booted processes a crashed host is replaced by, kept at
all times (default 0: one is booted after a crash and kept for 10 minutes after the latest).
One more host, the cordon (peer port + 1 + N), runs at the lowest CPU priority the workers
of namespaces that take more than their share of the node's CPU or keep hitting their CPU
or memory limit, until they have behaved for 60 s (doubling per repeat); its process starts
at the first such namespace (from a spare when there is one) and stops once it has served none for 60 s;
--no-cordon: none.
--pin-hosts auto|on|off (default auto): pin host i to the i-th CPU this process may use
(taskset), so a host's threads hand requests to each other on one CPU. auto pins when there
are at least as many hosts as CPUs (a pod with a cpuset, --isolate-hosts set to the cores).
--shards on|off (default on; NATS mode): each worker is kept warm on a few agents of the
region (its shard, on a consistent-hash ring), and the others forward its requests to them
over the peer port (docs/shards.md). --shard-min (default 2) and --shard-max (default 8) bound
a worker's shard unless its spec.placement.shard does; it grows by one member per
--shard-target-concurrency (default 4) requests in flight. off: every agent serves every worker.
--ai-url-template: how to reach a model server's Service; {service}, {namespace},
{port} and {binding} are substituted (default
http://{service}.{namespace}.svc.cluster.local:{port}).
`;

function hostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) throw new UsageError(`${flag} must be HOST:PORT, got "${value}"`, AGENT_USAGE);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

export async function runAgent(argv: string[]): Promise<number> {
  const { values } = parseFlags(AGENT_USAGE, {
    args: argv,
    options: {
      workers: { type: 'string' },
      nats: { type: 'string' },
      'nats-user': { type: 'string' },
      'nats-password-file': { type: 'string' },
      'nats-ca': { type: 'string' },
      'sealing-key-file': { type: 'string' },
      region: { type: 'string' },
      node: { type: 'string' },
      'agent-name': { type: 'string' },
      'peer-listen': { type: 'string', default: '127.0.0.1:0' },
      'peer-advertise': { type: 'string' },
      'actor-log-replicas': { type: 'string', default: '1' },
      'sql-snapshot-entries': { type: 'string' },
      advertise: { type: 'string' },
      'presence-ttl-ms': { type: 'string', default: String(DEFAULT_PRESENCE_TTL_MS) },
      'drain-delay-ms': { type: 'string', default: String(DEFAULT_DRAIN_DELAY_MS) },
      'drain-timeout-ms': { type: 'string', default: String(DEFAULT_DRAIN_TIMEOUT_MS) },
      'ai-url-template': { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:8080' },
      admin: { type: 'string', default: '127.0.0.1:9090' },
      'max-body-mb': { type: 'string', default: '100' },
      'max-ws-message-kb': { type: 'string', default: '1024' },
      'trusted-proxy': { type: 'string', multiple: true }, 'dev-error-pages': { type: 'boolean' },
      'pool-size': { type: 'string', default: '4' },
      'max-isolates-per-worker': { type: 'string', default: String(DEFAULT_MAX_ISOLATES_PER_WORKER) },
      'idle-isolate-ms': { type: 'string', default: String(DEFAULT_IDLE_ISOLATE_MS) },
      'egress-allow': { type: 'string', multiple: true, default: [] },
      'dev-peer-token': { type: 'boolean', default: false },
      'isolate-hosts': { type: 'string', default: String(DEFAULT_ISOLATE_HOSTS) },
      'isolate-host-spares': { type: 'string', default: '0' },
      'no-cordon': { type: 'boolean', default: false },
      'pin-hosts': { type: 'string', default: 'auto' },
      shards: { type: 'string', default: 'on' },
      'shard-min': { type: 'string', default: '2' },
      'shard-max': { type: 'string', default: '8' },
      'shard-target-concurrency': { type: 'string', default: '4' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(AGENT_USAGE); return 0; }
  const fail = (msg: string) => { process.stderr.write(`edge agent: ${msg}\n\n${AGENT_USAGE}`); return 2; };
  if (!values.workers === !values.nats) return fail('give exactly one of --workers DIR or --nats URL');
  if (values.nats && (!values.region || !values.node)) return fail('--nats needs --region and --node');
  if (values.region && !new RegExp(DNS_LABEL_PATTERN).test(values.region)) return fail(`--region must be a DNS label, got "${values.region}"`);
  const log = createLogger({ component: 'agent', ...(values.region ? { region: values.region, node: values.node } : {}) });
  const listen = hostPort('--listen', values.listen);
  const admin = hostPort('--admin', values.admin);
  const num = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new UsageError(`${flag} must be a non-negative number, got "${v}"`, AGENT_USAGE);
    return n;
  };
  for (const rule of values['egress-allow']) {
    try { parseEgressRule(rule); } catch (err) { return fail(`--egress-allow: ${(err as Error).message}`); }
  }
  let peerToken = process.env.EDGE_PEER_TOKEN;
  if (values.nats && !peerToken) {
    if (!values['dev-peer-token']) return fail('--nats needs $EDGE_PEER_TOKEN (the same on every agent of the region), or --dev-peer-token for a region of one agent');
    peerToken = randomBytes(32).toString('base64url');
    log.warn('peer token made up for this agent alone (--dev-peer-token): other agents of the region cannot forward actor calls to it');
  }
  let source: AgentConfig['source'];
  if (values.workers) {
    const dir = resolve(values.workers);
    if (!existsSync(dir)) { process.stderr.write(`edge agent: no such directory: ${dir}\n`); return 2; }
    source = { kind: 'directory', dir, ...(values.region ? { region: values.region } : {}) };
  } else {
    const credentials = natsCredentialsFrom({ user: values['nats-user'], passwordFile: values['nats-password-file'] });
    const caFile = values['nats-ca'] ?? process.env.EDGE_NATS_CA;
    const keyFile = values['sealing-key-file'] ?? process.env.EDGE_SEALING_KEY_FILE;
    source = {
      kind: 'nats', url: values.nats!, region: values.region!, node: values.node!,
      auth: { ...(credentials ? { credentials } : {}), ...(caFile ? { caFile } : {}) },
      ...(keyFile ? { sealer: SecretSealer.fromFile(keyFile), sealingKeyFile: keyFile } : {}),
    };
  }
  if (values.shards !== 'on' && values.shards !== 'off') return fail(`--shards must be on or off, got "${values.shards}"`);
  const isolateHosts = num('--isolate-hosts', values['isolate-hosts']);
  if (!Number.isInteger(isolateHosts)) return fail(`--isolate-hosts must be a whole number, got "${values['isolate-hosts']}"`);
  const pinHosts = PIN_HOSTS_MODES.find((m) => m === values['pin-hosts']);
  if (!pinHosts) return fail(`--pin-hosts must be one of ${PIN_HOSTS_MODES.join(', ')}, got "${values['pin-hosts']}"`);
  const agent = await startAgent({
    log,
    source,
    agentName: values['agent-name'] ?? values.node ?? 'standalone',
    listen,
    admin,
    peerListen: hostPort('--peer-listen', values['peer-listen']),
    ...(values.advertise ? { advertise: values.advertise } : {}),
    ...(values['peer-advertise'] ? { peerAdvertise: values['peer-advertise'] } : {}),
    ...(peerToken ? { peerToken } : {}),
    ...(process.env.EDGE_ADMIN_TOKEN ? { adminToken: process.env.EDGE_ADMIN_TOKEN } : {}),
    egressAllow: values['egress-allow'],
    ...(values['ai-url-template'] ? { aiUrlTemplate: values['ai-url-template'] } : {}),
    presenceTtlMs: num('--presence-ttl-ms', values['presence-ttl-ms']),
    drainDelayMs: num('--drain-delay-ms', values['drain-delay-ms']),
    drainTimeoutMs: num('--drain-timeout-ms', values['drain-timeout-ms']),
    actorLogReplicas: num('--actor-log-replicas', values['actor-log-replicas']),
    ...(values['sql-snapshot-entries'] ? { sqlSnapshotEntries: num('--sql-snapshot-entries', values['sql-snapshot-entries']) } : {}),
    maxBodyBytes: num('--max-body-mb', values['max-body-mb']) * 1024 * 1024,
    maxWebSocketMessageBytes: num('--max-ws-message-kb', values['max-ws-message-kb']) * 1024,
    poolSize: num('--pool-size', values['pool-size']),
    maxIsolatesPerWorker: num('--max-isolates-per-worker', values['max-isolates-per-worker']),
    idleIsolateMs: num('--idle-isolate-ms', values['idle-isolate-ms']),
    trustedProxies: values['trusted-proxy'] ?? [],
    ...(values['dev-error-pages'] ? { devErrorPages: true } : {}),
    isolateHosts,
    isolateHostSpares: num('--isolate-host-spares', values['isolate-host-spares']),
    isolateHostCordon: !values['no-cordon'],
    pinHosts,
    shards: {
      enabled: values.shards === 'on',
      min: num('--shard-min', values['shard-min']),
      max: num('--shard-max', values['shard-max']),
      targetConcurrency: num('--shard-target-concurrency', values['shard-target-concurrency']),
    },
    // The same node, flags and entry script that run this command, as `edge isolate-host`.
    isolateHostCommand: [process.execPath, ...process.execArgv.filter((a) => !a.startsWith('--inspect')), process.argv[1]!, 'isolate-host'],
  });
  const signal = await new Promise<string>((resolveStop) => {
    process.once('SIGINT', () => resolveStop('SIGINT'));
    process.once('SIGTERM', () => resolveStop('SIGTERM'));
  });
  log.info('agent stopping', { signal });
  await agent.drain();
  await agent.stop();
  return 0;
}

/**
 * Its isolates in this process (Agent), or in isolate-host processes behind a front
 * (AgentFront). Each is imported only when it is the one started: the front never loads the
 * isolate runtime (isolated-vm, the Workers API shim, the bindings) that only its hosts run.
 */
async function startAgent(cfg: AgentConfig): Promise<RunningAgent> {
  if ((cfg.isolateHosts ?? 0) > 0) return (await import('../node-agent/front.js')).AgentFront.start(cfg);
  return (await import('../node-agent/agent.js')).Agent.start(cfg);
}
