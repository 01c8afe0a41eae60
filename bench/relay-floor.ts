import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createConnection, createServer as createNetServer } from 'node:net';
import { corkedWriter, encodeFrame, frameReader, FrameType } from '../node-agent/serving/host-frames.js';
import { Pool, type Dispatcher } from 'undici';
import ivm from 'isolated-vm';
import { TRANSFORM_JS } from './workloads.js';

// The floor of the agent's shape, for bench/percore.ts: a front process relaying each
// request with undici over a Unix socket to a child process whose Node http server
// answers it with one isolated-vm call (applyIgnored, answered by a callback, as the agent calls), and nothing else: no routing table,
// limits, metrics, Request or Response objects, logs. The hello-world call returns its
// text; the JSON call parses the body, runs the bench's transform and serializes it, as the
// worker does. What the agent spends per request beyond this row is its own work; what
// this row spends beyond workerd is the shape's (two Node HTTP stacks and an isolate hop).
//
// `single` is the same isolate call answered by one process on TCP: the floor without the
// process boundary.
//
// `frames` relays as the agent's front does, with its frame code: the front parses HTTP
// once and sends each request to the child as a compact frame over the Unix socket; the
// child has no HTTP stack and answers with a frame (writes corked per event-loop turn on
// both sides). Its row is the process boundary's own cost with a Node front.
//
//   node --import tsx bench/relay-floor.ts front PORT SOCKET   (spawns the back itself)
//   node --import tsx bench/relay-floor.ts frames PORT SOCKET  (spawns frames-back itself)
//   node --import tsx bench/relay-floor.ts single PORT -

const [role, portArg, sock] = process.argv.slice(2);
if (!sock) throw new Error('usage: relay-floor.ts front|frames|single PORT SOCKET');

// Frames as the agent's front and hosts write them (node-agent/serving/host-frames.ts): a
// request is one `open` frame whose payload is a kind byte (0 hello, 1 json) and the body;
// an answer is one `data` frame, or a `reset` when the call failed.

const body = (req: IncomingMessage): Promise<string> => new Promise((resolve, reject) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks).toString()));
  req.on('error', reject);
});

function isolateCalls(): { call(json: boolean, text: string, done: (out: string | null) => void): void } {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = isolate.createContextSync();
  // As the agent calls a worker (node-agent/isolate/worker-isolate.ts, begin): applyIgnored
  // in, the answer back through an ignored callback.
  let nextId = 1;
  const answers = new Map<number, (out: string | null) => void>();
  context.global.setSync('__respond', new ivm.Callback((id: number, out: string | null) => {
    const done = answers.get(id);
    answers.delete(id);
    done?.(out);
  }, { ignored: true }));
  context.evalSync(`${TRANSFORM_JS}
    const respond = __respond;
    delete globalThis.__respond;
    globalThis.hello = (id) => { Promise.resolve('hello').then((out) => respond(id, out)); };
    globalThis.json = (id, text) => {
      Promise.resolve(text).then((t) => JSON.stringify(transform(JSON.parse(t)))).then((out) => respond(id, out), () => respond(id, null));
    };`);
  const calls = { hello: context.global.getSync('hello', { reference: true }) as ivm.Reference, json: context.global.getSync('json', { reference: true }) as ivm.Reference };
  return {
    call(json, text, done) {
      const id = nextId++;
      answers.set(id, done);
      (json ? calls.json : calls.hello).applyIgnored(undefined, json ? [id, text] : [id]);
    },
  };
}

const answer = (res: ServerResponse, json: boolean, out: string | null): void => {
  if (out === null) { res.destroy(); return; }
  res.writeHead(200, { 'content-type': json ? 'application/json' : 'text/plain;charset=UTF-8', 'content-length': Buffer.byteLength(out) });
  res.end(out);
};

if (role === 'back' || role === 'single') {
  const isolate = isolateCalls();
  const server = createServer({ keepAliveTimeout: role === 'single' ? 5_000 : 60_000 }, (req, res) => {
    void body(req).then((text) => {
      const json = (req.headers.host ?? '').startsWith('json');
      isolate.call(json, text, (out) => answer(res, json, out));
    }, () => res.destroy());
  });
  if (role === 'single') server.listen(Number(portArg), '127.0.0.1');
  else {
    rmSync(sock, { force: true });
    server.listen(sock, () => process.stdout.write('READY\n'));
  }
} else if (role === 'frames-back') {
  const isolate = isolateCalls();
  rmSync(sock, { force: true });
  createNetServer((conn) => {
    conn.setNoDelay(true);
    const send = corkedWriter(conn);
    conn.on('data', frameReader((_type, id, payload) => {
      isolate.call(payload[0] === 1, payload.toString('utf8', 1), (out) => {
        send(out === null ? encodeFrame(FrameType.reset, id) : encodeFrame(FrameType.data, id, out));
      });
    }));
  }).listen(sock, () => process.stdout.write('READY\n'));
} else if (role === 'frames') {
  const back = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'frames-back', '0', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  back.stdout.once('data', () => {
    const conn = createConnection(sock);
    conn.setNoDelay(true);
    const send = corkedWriter(conn);
    let nextId = 1;
    const waiting = new Map<number, { res: ServerResponse; json: boolean }>();
    conn.on('data', frameReader((type, id, payload) => {
      const w = waiting.get(id);
      waiting.delete(id);
      if (w) answer(w.res, w.json, type === FrameType.reset ? null : payload.toString('utf8'));
    }));
    createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
      void body(req).then((text) => {
        const json = (req.headers.host ?? '').startsWith('json');
        const id = nextId++;
        waiting.set(id, { res, json });
        send(encodeFrame(FrameType.open, id, Buffer.concat([Buffer.of(json ? 1 : 0), Buffer.from(text)])));
      }, () => res.destroy());
    }).listen(Number(portArg), '127.0.0.1');
  });
  const stop = (): void => { back.kill('SIGKILL'); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  back.on('exit', () => process.exit(1));
} else {
  const back = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'back', '0', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  back.stdout.once('data', () => {
    // The agent's front relays with undici's dispatch (node-agent/hosts/proxy.ts): so does the floor.
    const pool = new Pool('http://localhost', { socketPath: sock, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });
    createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
      const headers: string[] = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i]!.toLowerCase() !== 'connection') headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
      }
      let resume: (() => void) | undefined;
      pool.dispatch({ method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers, body: req.method === 'GET' ? null : req }, {
        onConnect() { /* never aborted: the load generator reads every answer */ },
        onHeaders(status, raw, r) {
          const out: string[] = [];
          const rawHeaders = raw as unknown as Buffer[];
          for (let i = 0; i < rawHeaders.length; i += 2) {
            const k = rawHeaders[i]!.toString('latin1');
            if (k.toLowerCase() !== 'connection' && k.toLowerCase() !== 'keep-alive') out.push(k, rawHeaders[i + 1]!.toString('latin1'));
          }
          res.writeHead(status, out);
          resume = r;
          res.on('drain', () => resume?.());
          return true;
        },
        onData: (chunk) => res.write(chunk),
        onComplete: () => { res.end(); },
        onError: () => { res.destroy(); },
      });
    }).listen(Number(portArg), '127.0.0.1');
  });
  const stop = (): void => { back.kill('SIGKILL'); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  back.on('exit', () => process.exit(1));
}
