import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../common/log.js';
import { WorkerServer, DEFAULT_MAX_ISOLATES_PER_WORKER } from '../node-agent/serving/worker-server.js';
import { startAdminServer } from '../node-agent/admin-server.js';
import type { NatsConnection } from 'nats';
import { DNS_LABEL_PATTERN } from '../common/api/index.js';
import { connectNats, DEFAULT_PRESENCE_TTL_MS, openBuckets, type EdgeBuckets } from '../common/nats.js';
import { DirectorySource, type DesiredStateSource } from '../node-agent/control/desired-state.js';
import { NatsSource } from '../node-agent/control/nats-source.js';
import { AgentPresence } from '../node-agent/control/presence.js';
import { ActorRuntime } from '../node-agent/actors/runtime.js';
import { startPeerServer } from '../node-agent/peer/peer-server.js';
import { ConsoleStream } from '../node-agent/control/console-stream.js';
import { AgentView } from '../common/agent-view.js';
import type { Server } from 'node:http';

// `edge agent --workers DIR ...` (standalone) or `edge agent --nats URL --region R --node N ...`
// (following the operator).

export const AGENT_USAGE = `usage: edge agent (--workers DIR | --nats URL --region R --node N)
                  [--listen HOST:PORT] [--admin HOST:PORT] [--advertise URL]
                  [--agent-name NAME] [--presence-ttl-ms N] [--ai-url-template T]
                  [--peer-listen HOST:PORT] [--peer-advertise URL] [--actor-log-replicas N]
                  [--max-body-mb N] [--pool-size N] [--max-isolates-per-worker N]
                  [--max-ws-message-kb N]

With --workers, serves every EdgeWorker manifest in DIR (reloading when it changes).
With --nats, serves the workers the operator placed in region R, announces itself
(presence with a TTL), reports per-worker readiness and publishes each worker's console
output for \`edge logs\` (NATS subject edge.logs.<namespace>.<name>). Requests are routed by Host
header and path prefix. /metrics, /healthz, /readyz and /status are on the admin port.

--peer-listen: the port other agents forward actor calls to (keep it off the user-facing
network; $EDGE_PEER_TOKEN, when set, must be the same on every agent).
--actor-log-replicas: JetStream replicas for actor state when this agent creates the
stream (use 3 on a NATS cluster: an acknowledged write then survives a server loss).
--ai-url-template: how to reach a model server's Service; {service}, {namespace},
{port} and {binding} are substituted (default
http://{service}.{namespace}.svc.cluster.local:{port}).
`;

function hostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) throw new Error(`${flag} must be HOST:PORT, got "${value}"`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

export async function runAgent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      workers: { type: 'string' },
      nats: { type: 'string' },
      region: { type: 'string' },
      node: { type: 'string' },
      'agent-name': { type: 'string' },
      'peer-listen': { type: 'string', default: '127.0.0.1:0' },
      'peer-advertise': { type: 'string' },
      'actor-log-replicas': { type: 'string', default: '1' },
      advertise: { type: 'string' },
      'presence-ttl-ms': { type: 'string', default: String(DEFAULT_PRESENCE_TTL_MS) },
      'ai-url-template': { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:8080' },
      admin: { type: 'string', default: '127.0.0.1:9090' },
      'max-body-mb': { type: 'string', default: '100' },
      'max-ws-message-kb': { type: 'string', default: '1024' },
      'pool-size': { type: 'string', default: '4' },
      'max-isolates-per-worker': { type: 'string', default: String(DEFAULT_MAX_ISOLATES_PER_WORKER) },
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
    if (!Number.isFinite(n) || n < 0) throw new Error(`${flag} must be a non-negative number, got "${v}"`);
    return n;
  };
  let source: DesiredStateSource;
  let nc: NatsConnection | undefined;
  let buckets: EdgeBuckets | undefined;
  if (values.workers) {
    const dir = resolve(values.workers);
    if (!existsSync(dir)) { process.stderr.write(`edge agent: no such directory: ${dir}\n`); return 2; }
    source = new DirectorySource(dir, log);
  } else {
    nc = await connectNats(values.nats!, `edge-agent ${values.region}/${values.node}`);
    buckets = await openBuckets(nc);
    const template = values['ai-url-template'];
    source = new NatsSource({
      buckets, region: values.region!, log,
      ...(template ? { aiUrl: (ref, binding) => template.replaceAll('{service}', ref.service).replaceAll('{namespace}', ref.namespace).replaceAll('{port}', String(ref.port)).replaceAll('{binding}', binding) } : {}),
    });
  }
  const agent = new WorkerServer({
    source,
    log,
    metricLabels: values.region ? { region: values.region, node: values.node! } : undefined,
    maxBodyBytes: num('--max-body-mb', values['max-body-mb']) * 1024 * 1024,
    maxWebSocketMessageBytes: num('--max-ws-message-kb', values['max-ws-message-kb']) * 1024,
    poolSize: num('--pool-size', values['pool-size']),
    maxIsolatesPerWorker: num('--max-isolates-per-worker', values['max-isolates-per-worker']),
  });
  const agentName = values['agent-name'] ?? values.node ?? 'standalone';
  let presence: AgentPresence | undefined;
  let runtime: ActorRuntime | undefined;
  let view: AgentView | undefined;
  let peerServer: Server | undefined;
  let peerUrl: string | undefined;
  let consoleStream: ConsoleStream | undefined;
  if (nc && buckets) {
    consoleStream = new ConsoleStream({ nc, region: values.region!, node: values.node!, log });
    await consoleStream.start();
    agent.consoleListeners.add(consoleStream.listener);
    // Actors: the ring of this region, the durable log, and the peer port other agents forward to.
    view = new AgentView(buckets, log, { reports: false });
    await view.start();
    const token = process.env.EDGE_PEER_TOKEN || undefined;
    runtime = new ActorRuntime({
      agent: agentName, region: values.region!, nc, buckets, view, log, pool: agent.pool, hooks: agent.hooks, sockets: agent.sockets, peerToken: token,
      workerDefinition: (key) => agent.workerDefinition(key),
      logReplicas: num('--actor-log-replicas', values['actor-log-replicas']),
      onActiveChange: () => { void presence?.report(); },
    });
    agent.hooks.actorRouter = runtime.isolateRouter;
    agent.versionListeners.add((key) => runtime!.workerChanged(key));
    await runtime.start();
    const peer = hostPort('--peer-listen', values['peer-listen']);
    const started = await startPeerServer(runtime.router, log, peer.port, peer.host, token);
    peerServer = started.server;
    peerUrl = values['peer-advertise'] ?? `http://${peer.host === '0.0.0.0' ? '127.0.0.1' : peer.host}:${started.port}`;
  }
  const adminServer = await startAdminServer(agent, admin.port, admin.host, () => ({ actors: runtime?.host.keys() ?? [] }));
  const port = await agent.start(listen.port, listen.host);
  if (nc && buckets) {
    presence = new AgentPresence({
      nc, buckets, log,
      agent: agentName, node: values.node!, region: values.region!,
      address: values.advertise ?? `http://${listen.host}:${port}`,
      ...(peerUrl ? { peerAddress: peerUrl } : {}),
      ttlMs: num('--presence-ttl-ms', values['presence-ttl-ms']),
      status: () => agent.status(),
      actors: () => runtime?.host.counts() ?? {},
    });
    await presence.start();
  }
  log.info('agent listening', { http: `http://${listen.host}:${port}`, admin: `http://${admin.host}:${adminServer.port}`, workers: values.workers ?? values.nats });
  const signal = await new Promise<string>((resolveStop) => {
    process.once('SIGINT', () => resolveStop('SIGINT'));
    process.once('SIGTERM', () => resolveStop('SIGTERM'));
  });
  log.info('agent stopping', { signal });
  if (presence && runtime) {
    // Drain: tell the region first (its rings drop this agent), then finish what is in
    // flight and hand every actor over.
    await presence.drain();
    await new Promise((r) => setTimeout(r, 100));
    const moved = await runtime.drain();
    log.info('actors handed over', { actors: moved });
    // Calls still on their way here are answered 421 (go elsewhere) until every agent's
    // ring has dropped this one.
    await new Promise((r) => setTimeout(r, 1000));
  }
  await presence?.stop();
  await runtime?.stop();
  await view?.stop();
  peerServer?.close();
  await agent.stop();
  if (consoleStream) { agent.consoleListeners.delete(consoleStream.listener); consoleStream.stop(); }
  await nc?.drain();
  adminServer.server.close();
  return 0;
}
