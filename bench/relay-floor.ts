import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createConnection, createServer as createNetServer, type Socket } from 'node:net';
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
// `frames` is the relay of docs/agent.md's plan: the front parses HTTP once and sends each
// request to the child as a compact frame over the Unix socket; the child has no HTTP stack
// and answers with a frame (writes corked per event-loop turn on both sides). Its row is the
// best a process boundary can do with a Node front.
//
//   node --import tsx bench/relay-floor.ts front PORT SOCKET   (spawns the back itself)
//   node --import tsx bench/relay-floor.ts frames PORT SOCKET  (spawns frames-back itself)
//   node --import tsx bench/relay-floor.ts single PORT -

const [role, portArg, sock] = process.argv.slice(2);
if (!sock) throw new Error('usage: relay-floor.ts front|frames|single PORT SOCKET');

// A frame: u32 length of what follows, u32 request id, then for a request u8 kind (0 hello,
// 1 json) and the body; for an answer u16 status (0: the call failed) and the body.
function frameReader(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer | null = null;
  return (chunk) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= 4) {
      const len = buf.readUInt32LE(at);
      if (buf.length - at - 4 < len) break;
      onFrame(buf.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    pending = at < buf.length ? buf.subarray(at) : null;
  };
}

/** Writes go out corked and leave once per event-loop turn, as one writev. */
function corkedWriter(sock: Socket): (b: Buffer) => void {
  let corked = false;
  const flush = (): void => { corked = false; sock.uncork(); };
  return (b) => {
    if (!corked) { corked = true; sock.cork(); process.nextTick(flush); }
    sock.write(b);
  };
}

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
    conn.on('data', frameReader((f) => {
      const id = f.readUInt32LE(0);
      isolate.call(f[4] === 1, f.toString('utf8', 5), (out) => {
        const len = out === null ? 0 : Buffer.byteLength(out);
        const b = Buffer.allocUnsafe(10 + len);
        b.writeUInt32LE(6 + len, 0);
        b.writeUInt32LE(id, 4);
        b.writeUInt16LE(out === null ? 0 : 200, 8);
        if (out !== null) b.write(out, 10, 'utf8');
        send(b);
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
    conn.on('data', frameReader((f) => {
      const id = f.readUInt32LE(0);
      const w = waiting.get(id);
      waiting.delete(id);
      if (w) answer(w.res, w.json, f.readUInt16LE(4) === 0 ? null : f.toString('utf8', 6));
    }));
    createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
      void body(req).then((text) => {
        const json = (req.headers.host ?? '').startsWith('json');
        const id = nextId++;
        waiting.set(id, { res, json });
        const len = Buffer.byteLength(text);
        const b = Buffer.allocUnsafe(9 + len);
        b.writeUInt32LE(5 + len, 0);
        b.writeUInt32LE(id, 4);
        b[8] = json ? 1 : 0;
        b.write(text, 9, 'utf8');
        send(b);
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
