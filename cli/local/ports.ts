import { createServer } from 'node:net';

/**
 * Where freePort looks: below the kernel's ephemeral range (32768-60999 on Linux), so no
 * outgoing connection can take the port between freePort's answer and the caller's bind.
 * Ports from listen(0) come from that range, and under a parallel test run an agent once
 * died with EADDRINUSE on one.
 */
const LOW = 20_000;
const HIGH = 32_000;

function canListen(port: number): Promise<boolean> {
  return new Promise((resolveOk) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolveOk(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolveOk(true)));
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port between ${LOW} and ${HIGH} after 200 tries`);
}

/** Polls `check` until it returns true or `timeoutMs` passes; the error names `what`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) { lastError = err; }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
