import { parseArgs } from 'node:util';
import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import { DNS_LABEL_PATTERN } from '../common/api/index.js';
import { LOGS_MAX_AGE_MS, LOGS_MAX_PER_WORKER, LOGS_STREAM, SUBJECTS, type LogLine } from '../common/nats.js';
import { decodeJson, LogLineSchema } from '../common/nats-messages.js';
import { readDevState, type DevState } from './cluster-client.js';
import { resolveNats } from './nats-target.js';

// `edge logs NAME [-f]`: a worker's console output and uncaught exceptions, and with
// --requests one line per request, from every agent that runs it. Agents publish each line
// on edge.logs.<namespace>.<name> (requests on edge.logs.<namespace>.<name>.requests); the
// EDGE_LOGS stream keeps the last minutes of them (node-agent/control/console-stream.ts).

export const LOGS_USAGE = `usage: edge logs NAME [-f] [--namespace NS] [--tail N] [--requests] [--status S]...
                 [--search TEXT] [--format pretty|json] [--nats URL]
                 [--nats-user USER] [--nats-password-file FILE] [--nats-ca FILE] [--kubeconfig FILE]

Prints the recent console output (console.log/info/warn/error/debug) and uncaught
exceptions (message, stack in the worker's source, ray id) of EdgeWorker NAME and of its
actors, from every agent in every region, oldest first: at most the last --tail lines
(default 100) of what NATS keeps (in memory: ${LOGS_MAX_AGE_MS / 60_000} minutes, ${LOGS_MAX_PER_WORKER} lines per worker), then exits.
With -f it then prints new lines as they come, until Ctrl-C. Each line: time,
region/node, level, message.
--requests: also one line per request, as wrangler tail shows them: method, URL, status,
  duration and CPU time (at most 100 a second per worker and agent are published).
--status S: only requests whose status matches (implies --requests; console lines are left
  out, exceptions kept with error): ok (below 400), error (500 and up), 404, 4xx, 5xx;
  repeat or comma-separate.
--search TEXT: only lines whose message, URL or stack contains TEXT (any case).
--format json (or --json): the raw JSON lines (fields in common/nats.ts LogLineSchema).
Under \`edge dev\`, positions in an inline worker are given in its YAML manifest.
A NAME that is no EdgeWorker is an error (exit 1) when the cluster can be asked:
--kubeconfig, else $KUBECONFIG, else the running \`edge dev\`.
NATS: --nats, else $EDGE_NATS_URL, else the running \`edge dev\`. Credentials: --nats-user
($EDGE_NATS_USER, a user allowed to read edge.logs, edge-logs in the chart) with
--nats-password-file ($EDGE_NATS_PASSWORD_FILE) or $EDGE_NATS_PASSWORD, else edge dev's.
--namespace defaults to default.
`;

/**
 * A worker's text made safe for a terminal: control characters other than newline and tab
 * (an escape sequence could clear the screen, retitle the window or fake other lines) are
 * shown as \xNN / \uNNNN instead of being obeyed.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** One line (or, for an exception, several) as a terminal shows it; `positions` rewrites an exception's (inline workers' to YAML under `edge dev`). */
export function formatLogLine(l: LogLine, positions?: (text: string) => string): string {
  return printable(formatRaw(l, positions));
}

function formatRaw(l: LogLine, positions?: (text: string) => string): string {
  const where = `${l.ts} ${l.region}/${l.node}`;
  if (l.kind === 'request') {
    const cpu = l.cpuMs !== undefined ? ` cpu ${l.cpuMs.toFixed(1)} ms` : '';
    return `${where} ${l.method ?? '?'} ${l.url ?? '?'} ${l.status ?? '?'} ${(l.durationMs ?? 0).toFixed(1)} ms${cpu}${l.ray ? ` ray ${l.ray}` : ''}`;
  }
  if (l.kind === 'exception') {
    let text = `${l.message}${l.stack ? `\n${l.stack}` : ''}`;
    if (positions) text = positions(text);
    return `${where} ${'error'.padEnd(5)} Uncaught ${text.replace(/\n/g, '\n    ')}${l.ray ? `\n    (ray ${l.ray})` : ''}`;
  }
  return `${where} ${l.level.padEnd(5)} ${l.message}`;
}

/** A --status filter: ok, error, 404, 4xx. */
export function statusMatcher(specs: string[]): ((l: LogLine) => boolean) | undefined {
  const parts = specs.flatMap((s) => s.split(',')).map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (parts.length === 0) return undefined;
  for (const p of parts) if (!/^(ok|error|[1-5]\d\d|[1-5]xx)$/.test(p)) throw new Error(`--status: "${p}" is not ok, error, a status like 404 or a class like 5xx`);
  return (l) => {
    if (l.kind === 'exception') return parts.includes('error');
    if (l.kind !== 'request' || l.status === undefined) return false;
    const st = l.status;
    return parts.some((p) => p === 'ok' ? st < 400 : p === 'error' ? st >= 500 : p.endsWith('xx') ? Math.floor(st / 100) === Number(p[0]) : st === Number(p));
  };
}

/** Whether EdgeWorker namespace/name exists: undefined when no cluster could be asked. */
async function workerExists(kubeconfig: string | undefined, namespace: string, name: string): Promise<boolean | undefined> {
  try {
    const { resolveCluster } = await import('./cluster-client.js');
    const { KubeClient, crPath, isNotFound } = await import('../operator/runtime/kube-client.js');
    const target = await resolveCluster(kubeconfig);
    const kube = new KubeClient(target.kc);
    try {
      await kube.request('GET', crPath('edgeworkers', namespace, name));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      return undefined;
    }
  } catch { return undefined; }
}

export async function runLogs(argv: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        follow: { type: 'boolean', short: 'f' }, namespace: { type: 'string', short: 'n', default: 'default' },
        tail: { type: 'string', default: '100' }, json: { type: 'boolean' }, format: { type: 'string' }, nats: { type: 'string' },
        requests: { type: 'boolean' }, status: { type: 'string', multiple: true }, search: { type: 'string' }, kubeconfig: { type: 'string' },
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
  if (values.format !== undefined && values.format !== 'json' && values.format !== 'pretty') {
    process.stderr.write(`edge logs: --format is pretty or json, not "${values.format}"\n`);
    return 2;
  }
  const json = values.json === true || values.format === 'json';
  let byStatus: ((l: LogLine) => boolean) | undefined;
  try { byStatus = statusMatcher(values.status ?? []); } catch (err) { process.stderr.write(`edge logs: ${(err as Error).message}\n`); return 2; }
  const search = values.search?.toLowerCase();
  const withRequests = values.requests === true || byStatus !== undefined;
  const subject = SUBJECTS.logs(values.namespace, name!);
  const subjects = withRequests ? [subject, SUBJECTS.requests(values.namespace, name!)] : [subject];
  const dev: DevState | undefined = readDevState();
  const devDir = dev && url === dev.natsUrl ? dev.dir : undefined;
  // Loaded only under edge dev (it brings the YAML parser).
  const mapInline = devDir ? (await import('./yaml-source.js')).mapInlinePositions : undefined;
  const positions = mapInline && devDir ? (text: string) => mapInline(text, devDir).text : undefined;
  const wanted = (l: LogLine) => (!byStatus || byStatus(l))
    && (search === undefined || [l.message, l.url ?? '', l.stack ?? ''].some((t) => t.toLowerCase().includes(search)));
  /** Says so and fails when NAME is no EdgeWorker (when the cluster can be asked). */
  const noSuchWorker = async (): Promise<boolean> => {
    if ((await workerExists(values.kubeconfig, values.namespace, name!)) !== false) return false;
    process.stderr.write(`edge logs: there is no EdgeWorker ${values.namespace}/${name} (see edge status${values.namespace === 'default' ? '' : ` -n ${values.namespace}`})\n`);
    return true;
  };
  let nc: NatsConnection;
  try {
    nc = await connect({ ...options, servers: url, name: 'edge logs', maxReconnectAttempts: values.follow ? -1 : 0 });
  } catch (err) {
    process.stderr.write(`edge logs: cannot reach NATS at ${url}: ${(err as Error).message}${dev ? '' : ' (is `edge dev` running?)'}\n`);
    return 1;
  }
  /** The line, when it is one and the filters want it. */
  const decode = (data: Uint8Array): LogLine | undefined => {
    try {
      const l = decodeJson(LogLineSchema, data, 'log line');
      return wanted(l) ? l : undefined;
    } catch { return undefined; /* not ours */ }
  };
  const show = (l: LogLine | undefined) => { if (l) process.stdout.write(`${json ? JSON.stringify(l) : formatLogLine(l, positions)}\n`); };
  const print = (data: Uint8Array) => show(decode(data));
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
      for (const s of subjects) stored += (await jsm.streams.info(LOGS_STREAM, { subjects_filter: s })).state.subjects?.[s] ?? 0;
    } catch {
      haveStream = false;
    }
    if (stored === 0 && await noSuchWorker()) return 1;
    if (!haveStream) {
      if (!values.follow) { process.stderr.write(`edge logs: no log stream ${LOGS_STREAM} in NATS (no agent has run yet)\n`); return 1; }
      const subs = subjects.map((s) => nc.subscribe(s));
      stopReading = () => { for (const s of subs) s.unsubscribe(); };
      await Promise.all(subs.map(async (sub) => { for await (const m of sub) print(m.data); }));
      return 0;
    }
    if (stored === 0 && !values.follow) {
      process.stderr.write(`edge logs: no ${withRequests ? 'requests or ' : ''}console output from ${values.namespace}/${name} in the last ${LOGS_MAX_AGE_MS / 60_000} minutes\n`);
      return 0;
    }
    // An ordered consumer starts at the first message by default. (With nats.js 2.29, a
    // string filterSubjects plus an explicit DeliverPolicy.All delivered nothing.)
    const consumer = await nc.jetstream().consumers.get(LOGS_STREAM, { filterSubjects: subjects });
    const recent: LogLine[] = [];
    let caughtUp = stored === 0;
    if (caughtUp) process.stderr.write(`edge logs: following ${values.namespace}/${name} (Ctrl-C stops)\n`);
    const messages = await consumer.consume();
    stopReading = () => { void messages.close(); };
    for await (const m of messages) {
      if (stopped) break;
      if (!caughtUp) {
        const l = decode(m.data);
        if (l) recent.push(l);
        if (recent.length > tail) recent.shift();
        if (m.info.pending === 0) {
          caughtUp = true;
          for (const d of recent) show(d);
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
