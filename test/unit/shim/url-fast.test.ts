import { describe, expect, it } from 'vitest';
// @ts-expect-error untyped shim module
import { fastParseURL } from '../../../node-agent/shim/web/url-fast.js';

// The isolate's own parse of plain http(s) URLs (shim/web/url-fast.js) must give exactly
// the record the host's WHATWG parser (Node's URL, node-agent/bindings/host-callbacks.ts)
// gives, for every input it accepts; whatever it is not sure of it leaves to the host.

type Rec = Record<'href' | 'origin' | 'protocol' | 'username' | 'password' | 'host' | 'hostname' | 'port' | 'pathname' | 'search' | 'hash', string>;
const fast = fastParseURL as (s: string) => Rec | undefined;

function node(s: string): Rec | null {
  try {
    const u = new URL(s);
    return { href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password, host: u.host, hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash };
  } catch {
    return null;
  }
}

const SCHEMES = ['http', 'https', 'HTTP', 'hTtPs', 'ws', 'ftp', 'file', 'x', 'http+x', 'https:', 'h'];
const SEPS = ['://', ':/', ':', ':///', ':\\\\', '://\t'];
const HOSTS = ['example.com', 'EXAMPLE.com', 'a', 'a.b.c', 'example.com.', '127.0.0.1', '0x7f.1', '1.2.3', '10', 'a.1', 'a.0x', 'a.0X1g', 'xn--nxasmq6b', 'a.xn--x',
  'a..b', '.a', '-a-.com', 'a_b.com', '[::1]', 'ex%41mple', 'ünï', 'user@h', 'u:p@h', 'h:p:q', '', 'a b', 'A-B.Example.ORG', '0', '1e5.com', 'localhost'];
const PORTS = ['', ':', ':80', ':443', ':0080', ':00443', ':8080', ':65535', ':65536', ':99999999', ':x', ':-1', ':1 ', ':0'];
const PATHS = ['', '/', '/a/b', '/a/b/', '//x', '/./a', '/a/..', '/%2e/', '/a/%2E%2e', '/.a', '/a..', '/a%20b', '/a b', '/é', '/a\\b', '/a"b', '/a<b>', '/a`b', '/{x}', '/a|b', "/a'b",
  '/~user/x.y-z_(1)!$&*+,;=:@', '/%zz', '/a%2fb', '/\t', '/a?', '/a#'];
const QUERIES = ['', '?', '?a=1&b=2', '?a b', "?a'b", '?q=/x?y', '?%zz', '?a=é', '?a`b', '?{}', '?a#b'];
const FRAGS = ['', '#', '#x', '#a b', '#a#b', '#`', '#?x', '#é', '#/p?q'];

function corpus(): string[] {
  const out = new Set<string>();
  for (const s of SCHEMES) for (const sep of SEPS) for (const h of HOSTS) out.add(`${s}${sep}${h}/`);
  for (const s of ['http', 'https', 'HTTPS']) for (const h of HOSTS) for (const p of PORTS) out.add(`${s}://${h}${p}/x`);
  for (const p of PATHS) for (const q of QUERIES) for (const f of FRAGS) out.add(`http://example.com${p}${q}${f}`);
  // Random mixtures, from a fixed seed: every piece next to every other.
  let seed = 42;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const pick = <T>(a: readonly T[]): T => a[rnd(a.length)]!;
  const noise = ['', ' ', '\n', '\u0000', '\u007f', '%', '%41', '@', ':', '/', '\\', '.', '..', '#', '?', 'A', '\u00e9', '[', ']', '^', '|'];
  for (let i = 0; i < 20_000; i++) {
    let s = `${pick(SCHEMES)}${pick(SEPS)}${pick(HOSTS)}${pick(PORTS)}${pick(PATHS)}${pick(QUERIES)}${pick(FRAGS)}`;
    if (rnd(3) === 0) {
      const at = rnd(s.length + 1);
      s = s.slice(0, at) + pick(noise) + s.slice(at);
    }
    if (rnd(10) === 0) s = pick(noise) + s + pick(noise);
    out.add(s);
  }
  return [...out];
}

describe('the isolate\'s own URL parse (url-fast.js)', () => {
  it('gives Node\'s WHATWG record for every input it accepts, and accepts the common ones', () => {
    let accepted = 0;
    const wrong: string[] = [];
    const inputs = corpus();
    for (const s of inputs) {
      const f = fast(s);
      if (f === undefined) continue;
      accepted++;
      const n = node(s);
      if (JSON.stringify(f) !== JSON.stringify(n)) wrong.push(`${JSON.stringify(s)}: fast ${JSON.stringify(f)} node ${JSON.stringify(n)}`);
    }
    expect(wrong.slice(0, 10)).toEqual([]);
    // It must take the common case, or it saves nothing.
    expect(accepted).toBeGreaterThan(inputs.length / 10);
    for (const s of ['https://api.example.com/v1/items?id=42&sort=desc', 'http://worker.test/', 'https://Example.COM:443/a/b#frag', 'http://localhost:8787/x?y']) {
      expect(fast(s)).toEqual(node(s));
    }
  });

  it('leaves to the host what it is not sure of', () => {
    for (const s of ['http://127.0.0.1/', 'http://[::1]/', 'http://u:p@h/', 'http://xn--nxasmq6b/', 'http://ünï/', 'http://h/./a', 'http://h/%2e%2e/a',
      'http://h/a b', 'http://h/a\\b', 'ws://h/', 'http:h/', ' http://h/', 'http://h:65536/', 'http://h/?a\'b', 'http://a..b/']) {
      expect(fast(s)).toBeUndefined();
    }
  });
});
