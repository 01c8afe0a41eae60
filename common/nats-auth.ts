import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'nats';
import {
  ACTOR_ALARMS_BUCKET, ACTOR_SUBJECTS, ACTORS_BUCKET, ACTORS_STREAM, AGENT_REPORTS_BUCKET, AGENTS_BUCKET, BUNDLES_BUCKET,
  LOGS_STREAM, SUBJECTS, WORKERS_BUCKET,
} from './nats.js';
import { EdgeError } from './errors.js';

// Who may do what on NATS (docs/security-nats.md). Every connection authenticates as one
// of these users; the server's `authorization` block (written by cli/local/ for `edge dev`
// and the tests, and by the Helm chart from the same lists: test/integration/chart-template
// checks they agree) gives each the subjects below and nothing else.
//
// Users with passwords, not NKeys or JWT accounts: the chart generates passwords at install
// (Helm has no ed25519 to make NKeys, and JWT accounts need nsc or an account server), the
// passwords live in Kubernetes Secrets and reach nats-server through its environment, so its
// ConfigMap holds none. The cost: one credential per role, not per agent (see AGENT below).

export type NatsRole = 'operator' | 'agent' | 'logs' | 'admin';
export const NATS_ROLES: readonly NatsRole[] = ['operator', 'agent', 'logs', 'admin'];

/** The user name of each role. `admin` exists only on the loopback servers of cli/local/ (provisioning, tests). */
export const NATS_USERS: Readonly<Record<NatsRole, string>> = {
  operator: 'edge-operator',
  agent: 'edge-agent',
  logs: 'edge-logs',
  admin: 'edge-admin',
};

/**
 * Each role gets replies on an inbox prefix of its own, so no role can subscribe to another's
 * replies (the operator's KV reads, `edge logs`' consumer deliveries) nor be sent them.
 */
export const NATS_INBOX_PREFIXES: Readonly<Record<NatsRole, string>> = {
  operator: '_INBOX_edge_operator',
  agent: '_INBOX_edge_agent',
  logs: '_INBOX_edge_logs',
  admin: '_INBOX',
};

export interface NatsPermissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
}

const JS_API = '$JS.API';
const kvStream = (bucket: string) => `KV_${bucket}`;
const objStream = (bucket: string) => `OBJ_${bucket}`;
const kvWrite = (bucket: string) => `$KV.${bucket}.>`;

/**
 * Reading one stream: its info, single-message gets (KV get, the actor log's direct gets)
 * and ephemeral consumers (KV watches, object-store reads, `edge logs`). No create, update,
 * delete or purge of the stream, and no publish to its subjects.
 */
function readStream(stream: string): string[] {
  return [
    `${JS_API}.STREAM.INFO.${stream}`,
    `${JS_API}.STREAM.MSG.GET.${stream}`,
    `${JS_API}.DIRECT.GET.${stream}`,
    `${JS_API}.DIRECT.GET.${stream}.>`,
    `${JS_API}.CONSUMER.CREATE.${stream}`,
    `${JS_API}.CONSUMER.CREATE.${stream}.>`,
    `${JS_API}.CONSUMER.INFO.${stream}.*`,
    `${JS_API}.CONSUMER.DELETE.${stream}.*`,
    `${JS_API}.CONSUMER.MSG.NEXT.${stream}.*`,
    `$JS.ACK.${stream}.>`,
  ];
}

/** What every JetStream client needs: the account check and stream lookup by subject. */
const JS_BASE = [`${JS_API}.INFO`, `${JS_API}.STREAM.NAMES`, '$JS.FC.>'];

/**
 * The operator writes desired state (worker and actor configs, bundles), creates the
 * streams, removes stale reports and deletes actors' storage: all of JetStream.
 */
const OPERATOR: NatsPermissions = {
  publish: { allow: [`${JS_API}.>`, '$JS.ACK.>', '$JS.FC.>', '$KV.>', '$O.>'] },
  subscribe: { allow: [`${NATS_INBOX_PREFIXES.operator}.>`] },
};

/**
 * An agent reads desired state and writes only presence, reports, alarms, console lines,
 * its status events, actor migrations and sockets, and actor logs. It cannot write
 * edge-workers, edge-actors or edge-bundles, create, change, delete or purge a KV stream,
 * nor read other workers' console lines. One credential is shared by every agent, so an
 * agent can write any agent's presence key and any actor's log (fenced by epochs, not by
 * identity): per-agent keys would need one user per node (JWT templates or auth callout).
 */
const AGENT: NatsPermissions = {
  publish: {
    allow: [
      ...JS_BASE,
      ...[WORKERS_BUCKET, ACTORS_BUCKET, ACTOR_ALARMS_BUCKET, AGENTS_BUCKET, AGENT_REPORTS_BUCKET].flatMap((b) => readStream(kvStream(b))),
      ...readStream(objStream(BUNDLES_BUCKET)),
      ...readStream(ACTORS_STREAM),
      `${JS_API}.STREAM.INFO.${LOGS_STREAM}`,
      kvWrite(AGENTS_BUCKET), kvWrite(AGENT_REPORTS_BUCKET), kvWrite(ACTOR_ALARMS_BUCKET),
      ...ACTOR_SUBJECTS.stream,
      // Snapshot garbage collection and a released actor's old generations.
      `${JS_API}.STREAM.PURGE.${ACTORS_STREAM}`,
      SUBJECTS.logsAll, SUBJECTS.agentStatusAll, SUBJECTS.actorMigrate('*'), SUBJECTS.socket('*', 'in'), SUBJECTS.socket('*', 'out'),
    ],
  },
  subscribe: {
    allow: [`${NATS_INBOX_PREFIXES.agent}.>`, SUBJECTS.actorMigrate('*'), SUBJECTS.socket('*', 'in'), SUBJECTS.socket('*', 'out')],
  },
};

/** `edge logs`: every worker's console lines, live and from the stream; nothing else. */
const LOGS: NatsPermissions = {
  publish: { allow: [...JS_BASE, ...readStream(LOGS_STREAM)] },
  subscribe: { allow: [`${NATS_INBOX_PREFIXES.logs}.>`, SUBJECTS.logsAll] },
};

const ADMIN: NatsPermissions = { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };

const PERMISSIONS: Readonly<Record<NatsRole, NatsPermissions>> = { operator: OPERATOR, agent: AGENT, logs: LOGS, admin: ADMIN };

/** The permissions of one role (a copy). */
export function natsPermissions(role: NatsRole): NatsPermissions {
  const p = PERMISSIONS[role];
  return { publish: { allow: [...p.publish.allow] }, subscribe: { allow: [...p.subscribe.allow] } };
}

/** The `authorization` block of a nats-server config: one user per role with its password (or a `$VAR` reference). */
export function natsAuthorization(passwords: Partial<Record<NatsRole, string>>): { users: { user: string; password: string; permissions: NatsPermissions }[] } {
  return {
    users: NATS_ROLES.filter((r) => passwords[r] !== undefined).map((r) => ({ user: NATS_USERS[r], password: passwords[r]!, permissions: natsPermissions(r) })),
  };
}

export interface NatsCredentials { user: string; pass: string }

export class NatsCredentialsError extends EdgeError {}

/**
 * A client's credentials from flags or the environment: the user from `user` or
 * $EDGE_NATS_USER, the password from `passwordFile`, $EDGE_NATS_PASSWORD_FILE or
 * $EDGE_NATS_PASSWORD (never a flag: argv is visible to every process). Undefined when no
 * user is given.
 */
export function natsCredentialsFrom(flags: { user?: string; passwordFile?: string }, env: NodeJS.ProcessEnv = process.env): NatsCredentials | undefined {
  const user = flags.user ?? env.EDGE_NATS_USER;
  if (!user) return undefined;
  const file = flags.passwordFile ?? env.EDGE_NATS_PASSWORD_FILE;
  let pass: string | undefined;
  if (file) {
    try { pass = readFileSync(file, 'utf8').trim(); } catch (err) {
      throw new NatsCredentialsError(`cannot read the NATS password file ${file}`, { cause: err, context: { user } });
    }
  } else {
    pass = env.EDGE_NATS_PASSWORD;
  }
  if (!pass) throw new NatsCredentialsError(`NATS user ${user} has no password: give --nats-password-file, $EDGE_NATS_PASSWORD_FILE or $EDGE_NATS_PASSWORD`, { context: { user } });
  return { user, pass };
}

/** What a client of `role` connects with: its credentials, its inbox prefix, and the CA of a TLS server. */
export interface NatsClientAuth {
  role: NatsRole;
  credentials?: NatsCredentials;
  /** PEM file of the CA that signed the server's certificate (tls:// URLs). */
  caFile?: string;
}

export function natsClientOptions(auth: NatsClientAuth): Partial<ConnectionOptions> {
  return {
    inboxPrefix: NATS_INBOX_PREFIXES[auth.role],
    ...(auth.credentials ? { user: auth.credentials.user, pass: auth.credentials.pass } : {}),
    ...(auth.caFile ? { tls: { caFile: auth.caFile } } : {}),
  };
}
