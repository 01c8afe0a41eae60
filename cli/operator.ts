import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { natsCredentialsFrom } from '../common/nats-auth.js';
import { SecretSealer } from '../common/sealing.js';
import { DEFAULT_AI_IMAGE, Operator } from '../operator/operator.js';

// `edge operator --nats URL [--kubeconfig FILE] ...`

export const OPERATOR_USAGE = `usage: edge operator --nats URL --sealing-key-file FILE [--kubeconfig FILE]
                     [--nats-user USER] [--nats-password-file FILE] [--nats-ca FILE]
                     [--admin HOST:PORT] [--identity ID] [--lease-namespace NS] [--lease-name NAME]
                     [--lease-duration-ms N] [--renew-deadline-ms N] [--retry-period-ms N]
                     [--ai-image IMAGE] [--model-namespace NS] [--concurrency N] [--resync-ms N]
                     [--secret-poll-ms N] [--actor-log-replicas N]

Reconciles EdgeWorkers and DurableActors: placement from Node region labels, desired
state to NATS, inference Deployments for ai bindings, status and Events. Several replicas
may run; a coordination.k8s.io Lease elects the one that acts. Without --kubeconfig it
uses $KUBECONFIG, then the in-cluster service account. /metrics, /healthz, /readyz and
/status are on the admin port. --ai-image is the image of catalogue models (EdgeModels)
that name none; --model-namespace puts every model server in that one namespace
(the chart's release namespace) instead of each worker's. Secrets that workers bind are
read by name (never listed or watched) every --secret-poll-ms. It exits with status 1 when it loses leadership.

NATS: --nats-user (or $EDGE_NATS_USER) with the password in --nats-password-file
($EDGE_NATS_PASSWORD_FILE) or $EDGE_NATS_PASSWORD; --nats-ca ($EDGE_NATS_CA) trusts that CA
for a tls:// server. The operator creates the NATS streams (agents may not);
--actor-log-replicas N: their JetStream replicas (the actor log, the KV buckets, the bundle
store; 3 on a NATS cluster, the chart's operator.jetstreamReplicas).
--sealing-key-file ($EDGE_SEALING_KEY_FILE): at least 32 bytes; Secret values are sealed
with it before they are published (the agents hold the same key).
`;

export async function runOperator(argv: string[]): Promise<number> {
  const { values } = parseArgs({
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
      identity: { type: 'string' },
      'lease-namespace': { type: 'string' },
      'lease-name': { type: 'string', default: 'edge-isolates-operator' },
      'lease-duration-ms': { type: 'string', default: '15000' },
      'renew-deadline-ms': { type: 'string', default: '10000' },
      'retry-period-ms': { type: 'string', default: '2000' },
      'ai-image': { type: 'string', default: DEFAULT_AI_IMAGE },
      'model-namespace': { type: 'string' },
      concurrency: { type: 'string', default: '4' },
      'resync-ms': { type: 'string', default: '300000' },
      'secret-poll-ms': { type: 'string', default: '30000' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(OPERATOR_USAGE); return 0; }
  const fail = (msg: string) => { process.stderr.write(`edge operator: ${msg}\n\n${OPERATOR_USAGE}`); return 2; };
  if (!values.nats) return fail('--nats URL is required');
  const sealingKeyFile = values['sealing-key-file'] ?? process.env.EDGE_SEALING_KEY_FILE;
  if (!sealingKeyFile) return fail('--sealing-key-file FILE is required (Secret values are never published in clear)');
  const num = (flag: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  const m = /^(.*):(\d+)$/.exec(values.admin);
  if (!m) return fail(`--admin must be HOST:PORT, got "${values.admin}"`);
  const kc = new KubeConfig();
  if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
  else kc.loadFromDefault();
  const identity = values.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const log = createLogger({ component: 'operator', identity });
  let lost = false;
  const operator = new Operator({
    kc, natsUrl: values.nats, identity, log,
    natsAuth: {
      credentials: natsCredentialsFrom({ user: values['nats-user'], passwordFile: values['nats-password-file'] }),
      caFile: values['nats-ca'] ?? process.env.EDGE_NATS_CA,
    },
    sealer: SecretSealer.fromFile(sealingKeyFile),
    actorLogReplicas: num('--actor-log-replicas', values['actor-log-replicas'], 1),
    leaseNamespace: values['lease-namespace'] ?? process.env.POD_NAMESPACE ?? 'default',
    leaseName: values['lease-name'],
    leaseDurationMs: num('--lease-duration-ms', values['lease-duration-ms'], 100),
    renewDeadlineMs: num('--renew-deadline-ms', values['renew-deadline-ms'], 50),
    retryPeriodMs: num('--retry-period-ms', values['retry-period-ms'], 10),
    defaultAiImage: values['ai-image'],
    ...(values['model-namespace'] ? { modelNamespace: values['model-namespace'] } : {}),
    concurrency: num('--concurrency', values.concurrency, 1),
    resyncMs: num('--resync-ms', values['resync-ms'], 1000),
    secretPollMs: num('--secret-poll-ms', values['secret-poll-ms'], 100),
    onLostLeadership: () => { lost = true; process.kill(process.pid, 'SIGTERM'); },
  });
  const adminPort = await operator.start(Number(m[2]), m[1] || '127.0.0.1');
  log.info('operator started', { admin: `http://${m[1] || '127.0.0.1'}:${adminPort}` });
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop());
    process.once('SIGTERM', () => resolveStop());
  });
  log.info('operator stopping', { lostLeadership: lost });
  await operator.stop();
  return lost ? 1 : 0;
}
