import { hostname } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type LogLevel } from '../common/log.js';
import { natsCredentialsFrom } from '../common/nats-auth.js';
import { SecretSealer } from '../common/sealing.js';
import { DEFAULT_AI_IMAGE, Operator, type AdminListen } from '../operator/operator.js';
import { UsageError, formatDuration, parseBindAddress, parseDuration, parseFlags, parseZapLevel } from './flags.js';

// `edge operator --nats URL [--kubeconfig FILE] ...`

export const OPERATOR_USAGE = `usage: edge operator --nats URL --sealing-key-file FILE [flags]

Reconciles EdgeWorkers and DurableActors: placement from Node region labels, desired
state to NATS, inference Deployments for ai bindings, status and Events. Several replicas
may run; a coordination.k8s.io Lease elects the one that acts. It exits with status 1
when it loses leadership. Flags as Go and controller-runtime take them: --flag value,
--flag=value or -flag value, --bool=false, durations as 500ms, 15s, 1m30s, 2h.

  --kubeconfig FILE                      cluster credentials (default: $KUBECONFIG, then the
                                         in-cluster service account)
  --metrics-bind-address ADDR            /metrics: HOST:PORT, :PORT (every interface) or 0 (off)
                                         (default: --admin)
  --health-probe-bind-address ADDR       /healthz, /readyz and /status (default: --admin)
  --admin HOST:PORT                      both at one address (default 127.0.0.1:9091)
  --leader-elect[=false]                 elect the acting replica with a Lease (default true;
                                         false acts at once: run one replica only)
  --leader-elect-lease-duration D        (default 15s)
  --leader-elect-renew-deadline D        (default 10s)
  --leader-elect-retry-period D          (default 2s)
  --leader-elect-resource-name NAME      the Lease (default edge-isolates-operator)
  --leader-elect-resource-namespace NS   its namespace (default $POD_NAMESPACE, else default)
  --identity ID                          this replica in the Lease (default $POD_NAME, else host-pid)
  --max-concurrent-reconciles N          reconciles per controller at once (default 4)
  --sync-period D                        reconcile everything this often (default 5m)
  --secret-poll-interval D               Secrets that workers bind are read by name (never
                                         listed or watched) this often (default 30s)
  --zap-log-level LEVEL                  debug, info, warn, error, or a verbosity N > 0 (debug)
                                         (default info, or $EDGE_LOG_LEVEL)
  --ai-image IMAGE                       image of catalogue models (EdgeModels) that name none
  --model-namespace NS                   put every model server in NS (the chart's release
                                         namespace) instead of each worker's
  --actor-log-replicas N                 JetStream replicas of the actor log, the KV buckets and
                                         the bundle store (3 on a NATS cluster; default 1)

The operator creates the NATS streams (agents may not). NATS: --nats-user USER (or
$EDGE_NATS_USER) with the password in --nats-password-file FILE ($EDGE_NATS_PASSWORD_FILE)
or $EDGE_NATS_PASSWORD; --nats-ca FILE ($EDGE_NATS_CA) trusts that CA for a tls:// server.
--sealing-key-file ($EDGE_SEALING_KEY_FILE): at least 32 bytes; Secret values are sealed
with it before they are published (the agents hold the same key).

Older spellings still work: --lease-duration-ms N, --renew-deadline-ms N,
--retry-period-ms N, --lease-name, --lease-namespace, --concurrency N, --resync-ms N,
--secret-poll-ms N.
`;

/** A flag and its older spelling: at most one of them, the older one in plain milliseconds or as named. */
function either<T>(values: Record<string, unknown>, name: string, alias: string, parse: (flag: string, v: string) => T, parseAlias: (flag: string, v: string) => T): T | undefined {
  const v = values[name] as string | undefined;
  const a = values[alias] as string | undefined;
  if (v !== undefined && a !== undefined) throw new UsageError(`give --${name} or --${alias} (its older spelling), not both`, OPERATOR_USAGE);
  if (v !== undefined) return parse(`--${name}`, v);
  return a === undefined ? undefined : parseAlias(`--${alias}`, a);
}

/** What the command line decides, validated (the chart test reads the chart's flags through it). */
export interface OperatorFlags {
  natsUrl: string;
  natsUser?: string;
  natsPasswordFile?: string;
  natsCa?: string;
  sealingKeyFile: string;
  kubeconfig?: string;
  identity?: string;
  /** The admin listeners: one when metrics and probes share an address. */
  listen: AdminListen[];
  logLevel?: LogLevel;
  leaderElection: boolean;
  leaseName: string;
  leaseNamespace: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  concurrency: number;
  resyncMs: number;
  secretPollMs: number;
  aiImage: string;
  modelNamespace?: string;
  actorLogReplicas: number;
}

/** Parses `edge operator`'s flags; 'help' for --help. Throws UsageError. */
export function parseOperatorFlags(argv: string[]): OperatorFlags | 'help' {
  const { values } = parseFlags(OPERATOR_USAGE, {
    args: argv,
    options: {
      nats: { type: 'string' },
      'nats-user': { type: 'string' },
      'nats-password-file': { type: 'string' },
      'nats-ca': { type: 'string' },
      'sealing-key-file': { type: 'string' },
      'actor-log-replicas': { type: 'string', default: '1' },
      kubeconfig: { type: 'string' },
      admin: { type: 'string', default: '127.0.0.1:9091' },
      'metrics-bind-address': { type: 'string' },
      'health-probe-bind-address': { type: 'string' },
      identity: { type: 'string' },
      'leader-elect': { type: 'boolean', default: true },
      'leader-elect-lease-duration': { type: 'string' },
      'leader-elect-renew-deadline': { type: 'string' },
      'leader-elect-retry-period': { type: 'string' },
      'leader-elect-resource-name': { type: 'string' },
      'leader-elect-resource-namespace': { type: 'string' },
      'lease-namespace': { type: 'string' },
      'lease-name': { type: 'string' },
      'lease-duration-ms': { type: 'string' },
      'renew-deadline-ms': { type: 'string' },
      'retry-period-ms': { type: 'string' },
      'ai-image': { type: 'string', default: DEFAULT_AI_IMAGE },
      'model-namespace': { type: 'string' },
      'max-concurrent-reconciles': { type: 'string' },
      concurrency: { type: 'string' },
      'sync-period': { type: 'string' },
      'resync-ms': { type: 'string' },
      'secret-poll-interval': { type: 'string' },
      'secret-poll-ms': { type: 'string' },
      'zap-log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const usage = (msg: string) => new UsageError(msg, OPERATOR_USAGE);
  if (!values.nats) throw usage('--nats URL is required');
  const sealingKeyFile = values['sealing-key-file'] ?? process.env.EDGE_SEALING_KEY_FILE;
  if (!sealingKeyFile) throw usage('--sealing-key-file FILE is required (Secret values are never published in clear)');
  const int = (min: number) => (flag: string, v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min) throw usage(`${flag} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  const duration = (minMs: number) => (flag: string, v: string) => {
    const ms = parseDuration(flag, v, OPERATOR_USAGE);
    if (ms < minMs) throw usage(`${flag} must be at least ${formatDuration(minMs)}, got "${v}"`);
    return ms;
  };
  const durationOr = (name: string, alias: string, minMs: number, dflt: number) =>
    either(values, name, alias, duration(minMs), int(minMs)) ?? dflt;
  const str = (_flag: string, v: string) => v;
  const admin = parseBindAddress('--admin', values.admin, OPERATOR_USAGE);
  if (!admin) throw usage('--admin must be HOST:PORT');
  const metricsAt = values['metrics-bind-address'] === undefined ? admin : parseBindAddress('--metrics-bind-address', values['metrics-bind-address'], OPERATOR_USAGE);
  const probesAt = values['health-probe-bind-address'] === undefined ? admin : parseBindAddress('--health-probe-bind-address', values['health-probe-bind-address'], OPERATOR_USAGE);
  const level = values['zap-log-level'] === undefined ? undefined : parseZapLevel('--zap-log-level', values['zap-log-level'], OPERATOR_USAGE);
  const leaseDurationMs = durationOr('leader-elect-lease-duration', 'lease-duration-ms', 100, 15_000);
  const renewDeadlineMs = durationOr('leader-elect-renew-deadline', 'renew-deadline-ms', 50, 10_000);
  const retryPeriodMs = durationOr('leader-elect-retry-period', 'retry-period-ms', 10, 2_000);
  if (!(renewDeadlineMs < leaseDurationMs)) throw usage(`the renew deadline (${formatDuration(renewDeadlineMs)}) must be shorter than the lease duration (${formatDuration(leaseDurationMs)})`);
  const concurrency = either(values, 'max-concurrent-reconciles', 'concurrency', int(1), int(1)) ?? 4;
  const resyncMs = durationOr('sync-period', 'resync-ms', 1000, 300_000);
  const secretPollMs = durationOr('secret-poll-interval', 'secret-poll-ms', 100, 30_000);
  const leaseName = either(values, 'leader-elect-resource-name', 'lease-name', str, str) ?? 'edge-isolates-operator';
  const leaseNamespace = either(values, 'leader-elect-resource-namespace', 'lease-namespace', str, str) ?? process.env.POD_NAMESPACE ?? 'default';
  const actorLogReplicas = int(1)('--actor-log-replicas', values['actor-log-replicas']);

  // One listener per address; metrics and probes at one address share it.
  const listen: AdminListen[] = [];
  const same = (a: { host: string; port: number }, b: { host: string; port: number }) => a.host === b.host && a.port === b.port;
  if (probesAt && metricsAt && same(probesAt, metricsAt)) listen.push({ ...probesAt });
  else {
    if (probesAt) listen.push({ ...probesAt, serve: ['probes', 'status'] });
    if (metricsAt) listen.push({ ...metricsAt, serve: ['metrics'] });
  }

  return {
    natsUrl: values.nats, natsUser: values['nats-user'], natsPasswordFile: values['nats-password-file'], natsCa: values['nats-ca'] ?? process.env.EDGE_NATS_CA,
    sealingKeyFile, kubeconfig: values.kubeconfig, identity: values.identity, listen, logLevel: level,
    leaderElection: values['leader-elect'], leaseName, leaseNamespace, leaseDurationMs, renewDeadlineMs, retryPeriodMs,
    concurrency, resyncMs, secretPollMs, aiImage: values['ai-image'], modelNamespace: values['model-namespace'], actorLogReplicas,
  };
}

export async function runOperator(argv: string[]): Promise<number> {
  const f = parseOperatorFlags(argv);
  if (f === 'help') { process.stdout.write(OPERATOR_USAGE); return 0; }
  const kc = new KubeConfig();
  if (f.kubeconfig) kc.loadFromFile(f.kubeconfig);
  else kc.loadFromDefault();
  const identity = f.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const log = createLogger({ component: 'operator', identity }, undefined, f.logLevel);
  let lost = false;
  const operator = new Operator({
    kc, natsUrl: f.natsUrl, identity, log,
    natsAuth: {
      credentials: natsCredentialsFrom({ user: f.natsUser, passwordFile: f.natsPasswordFile }),
      caFile: f.natsCa,
    },
    sealer: SecretSealer.fromFile(f.sealingKeyFile),
    actorLogReplicas: f.actorLogReplicas,
    leaderElection: f.leaderElection,
    leaseNamespace: f.leaseNamespace,
    leaseName: f.leaseName,
    leaseDurationMs: f.leaseDurationMs,
    renewDeadlineMs: f.renewDeadlineMs,
    retryPeriodMs: f.retryPeriodMs,
    defaultAiImage: f.aiImage,
    ...(f.modelNamespace ? { modelNamespace: f.modelNamespace } : {}),
    concurrency: f.concurrency,
    resyncMs: f.resyncMs,
    secretPollMs: f.secretPollMs,
    onLostLeadership: () => { lost = true; process.kill(process.pid, 'SIGTERM'); },
  });
  const ports = await operator.start(f.listen);
  const urls = Object.fromEntries(f.listen.map((l, i) => [(l.serve ?? ['admin']).join('+'), `http://${l.host}:${ports[i]}`]));
  log.info('operator started', { ...urls, leaderElection: f.leaderElection });
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop());
    process.once('SIGTERM', () => resolveStop());
  });
  log.info('operator stopping', { lostLeadership: lost });
  await operator.stop();
  return lost ? 1 : 0;
}
