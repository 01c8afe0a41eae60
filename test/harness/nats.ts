import { httpOk } from '../../cli/local/control-plane.js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManagedProcess } from '../../cli/local/process.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { toolPath } from '../../cli/local/tools.js';

// One nats-server with JetStream on loopback, for tests that need NATS without a whole
// control plane. The port and the store dir stay the same across kill9()/restart(), so
// clients reconnect to the same server and find the same streams.

export interface TestNats {
  /** `nats://127.0.0.1:<port>` */
  url: string;
  port: number;
  monitorUrl: string;
  /** JetStream's store dir (kept across restarts). */
  storeDir: string;
  /** The running server process (undefined between kill9() and restart()). */
  readonly process: ManagedProcess | undefined;
  /** SIGTERM (then SIGKILL after the grace period); removes the temp dir unless the store dir was given. */
  stop(): Promise<void>;
  /** SIGKILL, resolving once the process is gone: no shutdown, no flush. */
  kill9(): Promise<void>;
  /** Starts the server again (stopping it first if it runs) on the same port and store dir; resolves when JetStream is ready. */
  restart(): Promise<void>;
}

export interface StartNatsOptions {
  /** JetStream store dir; a fresh temp dir (removed on stop) when omitted. */
  storeDir?: string;
  /** Server max_payload in bytes (server default 1 MiB). */
  maxPayload?: number;
  /** Keep the temp dir (logs, store) after stop; also when EDGE_KEEP_TMP=1. */
  keepDir?: boolean;
}


export async function startNats(opts: StartNatsOptions = {}): Promise<TestNats> {
  const bin = toolPath('nats-server');
  const dir = mkdtempSync(join(tmpdir(), 'edge-nats-'));
  const storeDir = opts.storeDir ?? join(dir, 'js');
  mkdirSync(storeDir, { recursive: true });
  const keep = opts.keepDir ?? process.env.EDGE_KEEP_TMP === '1';
  const [port, monitorPort] = await Promise.all([freePort(), freePort()]);
  const conf = join(dir, 'nats.conf');
  writeFileSync(conf, [
    'listen: "127.0.0.1:' + port + '"',
    'http: "127.0.0.1:' + monitorPort + '"',
    'server_name: "test-nats"',
    ...(opts.maxPayload ? [`max_payload: ${opts.maxPayload}`] : []),
    `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
    '',
  ].join('\n'));
  const monitorUrl = `http://127.0.0.1:${monitorPort}`;
  let proc: ManagedProcess | undefined;
  let starts = 0;

  const start = async () => {
    starts++;
    const p = new ManagedProcess('nats-server', bin, ['-c', conf], { logFile: join(dir, 'nats.log') });
    proc = p;
    await waitFor(`nats-server (start ${starts}) /healthz?js-enabled-only=true`, async () => {
      p.assertRunning();
      return httpOk(`${monitorUrl}/healthz?js-enabled-only=true`);
    }, 30_000);
  };
  const kill9 = async () => {
    const p = proc;
    proc = undefined;
    if (!p) return;
    p.killNow();
    await p.wait();
  };

  try {
    await start();
  } catch (err) {
    await kill9();
    if (!keep) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    monitorUrl,
    storeDir,
    get process() { return proc; },
    kill9,
    async restart() {
      const p = proc;
      proc = undefined;
      if (p) await p.stop();
      await start();
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (p) await p.stop();
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
  };
}
