import { parseArgs } from 'node:util';
import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import { DNS_LABEL_PATTERN } from '../common/api/index.js';
import { decodeJson, LOGS_MAX_AGE_MS, LOGS_MAX_PER_WORKER, LOGS_STREAM, LogLineSchema, SUBJECTS, type LogLine } from '../common/nats.js';
import { readDevState } from './cluster-client.js';
import { resolveNats } from './nats-target.js';

// `edge logs NAME [-f]`: a worker's console output, from every agent that runs it. Agents
// publish each line on edge.logs.<namespace>.<name>; the EDGE_LOGS stream keeps the last
// minutes of them (node-agent/console-stream.ts).

export const LOGS_USAGE = `usage: edge logs NAME [-f] [--namespace NS] [--tail N] [--json] [--nats URL]
                 [--nats-user USER] [--nats-password-file FILE] [--nats-ca FILE]

Prints the recent console output (console.log/info/warn/error/debug) of EdgeWorker NAME
and of its actors, from every agent in every region, oldest first: at most the last
--tail lines (default 100) of what NATS keeps (in memory: ${LOGS_MAX_AGE_MS / 60_000} minutes, ${LOGS_MAX_PER_WORKER} lines per
worker), then exits. With -f it then prints new lines as they come, until Ctrl-C. Each
line: time, region/node, level, message (--json: the raw JSON lines).
NATS: --nats, else $EDGE_NATS_URL, else the running \`edge dev\`. Credentials: --nats-user
($EDGE_NATS_USER, a user allowed to read edge.logs, edge-logs in the chart) with
--nats-password-file ($EDGE_NATS_PASSWORD_FILE) or $EDGE_NATS_PASSWORD, else edge dev's.
--namespace defaults to default.
`;

function format(l: LogLine, json: boolean): string {
  return json ? JSON.stringify(l) : `${l.ts} ${l.region}/${l.node} ${l.level.padEnd(5)} ${l.message}`;
}

export async function runLogs(argv: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        follow: { type: 'boolean', short: 'f' }, namespace: { type: 'string', short: 'n', default: 'default' },
        tail: { type: 'string', default: '100' }, json: { type: 'boolean' }, nats: { type: 'string' },
        'nats-user': { type: 'string' }, 'nats-password-file': { type: 'string' }, 'nats-ca': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`edge logs: ${(err as Error).message}\n\n${LOGS_USAGE}`);
    return 2;
  }
  if (values.help) { process.stdout.write(LOGS_USAGE); return 0; }
  const name = positionals[0];
  const label = new RegExp(DNS_LABEL_PATTERN);
  if (positionals.length !== 1 || !label.test(name!) || !label.test(values.namespace)) {
    process.stderr.write(`edge logs: give one EdgeWorker NAME (and --namespace) as DNS labels\n\n${LOGS_USAGE}`);
    return 2;
  }
  const tail = Number(values.tail);
  if (!Number.isInteger(tail) || tail < 0) { process.stderr.write(`edge logs: --tail must be a whole number\n`); return 2; }
  let url: string;
  let options: Partial<ConnectionOptions>;
  try {
    ({ url, options } = resolveNats({ url: values.nats, user: values['nats-user'], passwordFile: values['nats-password-file'], ca: values['nats-ca'] }));
  } catch (err) { process.stderr.write(`edge logs: ${(err as Error).message}\n`); return 1; }
  const json = values.json ?? false;
  const subject = SUBJECTS.logs(values.namespace, name!);
  let nc: NatsConnection;
  try {
    nc = await connect({ ...options, servers: url, name: 'edge logs', maxReconnectAttempts: values.follow ? -1 : 0 });
  } catch (err) {
    const dev = readDevState();
    process.stderr.write(`edge logs: cannot reach NATS at ${url}: ${(err as Error).message}${dev ? '' : ' (is `edge dev` running?)'}\n`);
    return 1;
  }
  const print = (data: Uint8Array) => {
    try { process.stdout.write(format(decodeJson(LogLineSchema, data, 'log line'), json) + '\n'); } catch { /* not ours */ }
  };
  let stopped = false;
  let stopReading: (() => void) | undefined;
  const stop = () => { stopped = true; stopReading?.(); void nc.close(); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const jsm = await nc.jetstreamManager();
    let stored = 0;
    let haveStream = true;
    try {
      const info = await jsm.streams.info(LOGS_STREAM, { subjects_filter: subject });
      stored = info.state.subjects?.[subject] ?? 0;
    } catch {
      haveStream = false;
    }
    if (!haveStream) {
      if (!values.follow) { process.stderr.write(`edge logs: no log stream ${LOGS_STREAM} in NATS (no agent has run yet)\n`); return 1; }
      const sub = nc.subscribe(subject);
      stopReading = () => sub.unsubscribe();
      for await (const m of sub) print(m.data);
      return 0;
    }
    if (stored === 0 && !values.follow) {
      process.stderr.write(`edge logs: no console output from ${values.namespace}/${name} in the last ${LOGS_MAX_AGE_MS / 60_000} minutes\n`);
      return 0;
    }
    // An ordered consumer starts at the first message by default. (With nats.js 2.29, a
    // string filterSubjects plus an explicit DeliverPolicy.All delivered nothing.)
    const consumer = await nc.jetstream().consumers.get(LOGS_STREAM, { filterSubjects: [subject] });
    const recent: Uint8Array[] = [];
    let caughtUp = stored === 0;
    if (caughtUp) process.stderr.write(`edge logs: following ${values.namespace}/${name} (Ctrl-C stops)\n`);
    const messages = await consumer.consume();
    stopReading = () => { void messages.close(); };
    for await (const m of messages) {
      if (stopped) break;
      if (!caughtUp) {
        recent.push(m.data);
        if (recent.length > tail) recent.shift();
        if (m.info.pending === 0) {
          caughtUp = true;
          for (const d of recent) print(d);
          recent.length = 0;
          if (!values.follow) break;
        }
        continue;
      }
      print(m.data);
    }
    return 0;
  } catch (err) {
    if (stopped) return 0;
    process.stderr.write(`edge logs: ${(err as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    if (!nc.isClosed()) await nc.close();
  }
}
