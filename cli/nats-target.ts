import type { ConnectionOptions } from 'nats';
import { natsClientOptions, natsCredentialsFrom } from '../common/nats-auth.js';
import { readDevState } from './cluster-client.js';

// Finding NATS for `edge logs`: apart from cli/cluster-client.ts, whose other users
// (`edge status`, `deploy`, `secret`) talk only to the apiserver and need not load the NATS
// client, the NATS layout and its schemas.

/**
 * --nats, else $EDGE_NATS_URL, else the running `edge dev`'s; with the credentials of the
 * flags, else $EDGE_NATS_USER and its password, else those `edge dev` wrote for `edge logs`.
 */
export function resolveNats(flags: { url?: string; user?: string; passwordFile?: string; ca?: string }): { url: string; options: Partial<ConnectionOptions> } {
  const dev = readDevState();
  const url = flags.url ?? process.env.EDGE_NATS_URL ?? dev?.natsUrl;
  if (!url) throw new Error('no NATS: give --nats URL, set $EDGE_NATS_URL, or start `edge dev`');
  let credentials = natsCredentialsFrom({ user: flags.user, passwordFile: flags.passwordFile });
  if (!credentials && dev && url === dev.natsUrl && dev.natsUser && dev.natsPasswordFile) {
    credentials = natsCredentialsFrom({ user: dev.natsUser, passwordFile: dev.natsPasswordFile });
  }
  const caFile = flags.ca ?? process.env.EDGE_NATS_CA;
  return { url, options: natsClientOptions({ role: 'logs', ...(credentials ? { credentials } : {}), ...(caFile ? { caFile } : {}) }) };
}
