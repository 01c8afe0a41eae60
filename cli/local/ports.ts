import { createServer } from 'node:net';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

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

/**
 * Ports this process handed out lately. A port is free again the moment canListen closes
 * it, until its caller binds it: without this, a second draw could return it to another
 * component meanwhile (a bench run's etcd once failed with "creating peer listener failed:
 * bind: address already in use").
 */
const handed = new Set<number>();
const HANDED_MAX = 2048;

/** A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range, not handed out lately here. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (handed.has(port)) continue;
    // Reserved before the check, which awaits: a caller meanwhile draws another.
    handed.add(port);
    if (await canListen(port)) {
      if (handed.size > HANDED_MAX) handed.delete(handed.values().next().value!);
      return port;
    }
    handed.delete(port);
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

/** A process listening on a TCP port, as /proc tells it. */
export interface PortHolder { pid: number; command: string }

/**
 * Who listens on TCP `port` (any address, v4 or v6): the socket's inode from
 * /proc/net/tcp{,6} (state 0A, LISTEN), then the process with an fd on `socket:[inode]`.
 * undefined when nothing listens or the holder is not visible (another user's process:
 * /proc hides its fds).
 */
export function portHolder(port: number): PortHolder | undefined {
  const inodes = new Set<string>();
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try { text = readFileSync(table, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      if (f.length > 9 && f[3] === '0A' && f[1]!.endsWith(`:${hex}`) && f[9] !== '0') inodes.add(f[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try { pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)); } catch { return undefined; }
  for (const pid of pids) {
    let fds: string[];
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      let target: string;
      try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1]!)) {
        let command = '?';
        try { command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 200) || '?'; } catch { /* gone */ }
        return { pid: Number(pid), command };
      }
    }
  }
  return undefined;
}
