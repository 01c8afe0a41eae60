import { once } from 'node:events';
import type { Server, ServerResponse } from 'node:http';

// A drain closes a listener only once the requests it accepted have been answered (as Go's
// http.Server.Shutdown does): the agent's HTTP front and, with isolate hosts, its proxy.
// While draining, every response says `Connection: close`, so clients (and load balancers)
// open their next request elsewhere instead of reusing a connection that is about to go.

export class InFlight {
  private n = 0;
  private draining = false;
  private waiters: (() => void)[] = [];

  /** Counts `res` until it is over; call when a request arrives. */
  track(res: ServerResponse): void {
    this.n += 1;
    if (this.draining && !res.headersSent) res.setHeader('connection', 'close');
    res.once('close', () => {
      this.n -= 1;
      if (this.n === 0) for (const w of this.waiters.splice(0)) w();
    });
  }

  get count(): number { return this.n; }
  get isDraining(): boolean { return this.draining; }

  /** From now on every response closes its connection. */
  drain(): void { this.draining = true; }

  /** Resolves true once nothing is in flight, false after `maxMs` with requests still running. */
  async settled(maxMs: number): Promise<boolean> {
    if (this.n === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      new Promise<boolean>((resolve) => this.waiters.push(() => resolve(true))),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), Math.max(0, maxMs)); }),
    ]);
    clearTimeout(timer);
    return done;
  }
}

/**
 * Stops accepting connections and lets the requests in flight finish (at most `graceMs`);
 * idle keep-alive connections are closed meanwhile. The caller then destroys what is left
 * (`cut` requests past the bound, WebSockets) and awaits `closed`.
 */
export async function stopAccepting(server: Server, inflight: InFlight, graceMs: number): Promise<{ cut: number; closed: Promise<unknown> }> {
  inflight.drain();
  const closed = server.listening ? once(server, 'close') : Promise.resolve();
  server.close();
  // Idle keep-alive connections go now; one that finishes its request later goes then.
  server.closeIdleConnections();
  const sweep = setInterval(() => server.closeIdleConnections(), 50);
  await inflight.settled(graceMs);
  clearInterval(sweep);
  return { cut: inflight.count, closed };
}
