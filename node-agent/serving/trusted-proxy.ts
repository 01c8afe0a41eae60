import { BlockList, isIP } from 'node:net';
import { EdgeError } from '../../common/errors.js';

// Who the client is. What a client says about itself (CF-Connecting-IP, X-Forwarded-For,
// X-Forwarded-Proto, X-Real-IP, True-Client-IP) is believed only when the connection
// comes from a proxy the agent was told to trust (--trusted-proxy CIDR, repeatable; none
// by default). From anyone else those headers are dropped: the worker's CF-Connecting-IP
// is the connection's address and X-Forwarded-Proto its scheme (plain http), set by the
// agent, so a worker always sees one address it can rely on. A Unix-socket peer (no address) is trusted only when the list holds "unix":
// a front process forwarding to isolate-host processes on the same node says so.

export class TrustedProxyConfigError extends EdgeError {}

/**
 * Where a trusted proxy (Cloudflare's "visitor location headers", or any proxy that
 * sets them) says the client is: the header and the request.cf field it fills.
 */
export const GEO_HEADERS: ReadonlyMap<string, string> = new Map([
  ['cf-ipcountry', 'country'], ['cf-ipcontinent', 'continent'], ['cf-ipcity', 'city'], ['cf-region', 'region'],
  ['cf-region-code', 'regionCode'], ['cf-postal-code', 'postalCode'], ['cf-metro-code', 'metroCode'],
  ['cf-iplatitude', 'latitude'], ['cf-iplongitude', 'longitude'], ['cf-timezone', 'timezone'],
]);

/** The headers a client could forge about where it is. */
export const FORWARDING_HEADERS = new Set(['cf-connecting-ip', 'x-forwarded-for', 'x-forwarded-proto', 'x-real-ip', 'true-client-ip', ...GEO_HEADERS.keys()]);

export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly unix: boolean;
  /** No entries: nothing is trusted, and the check costs nothing. */
  readonly none: boolean;

  /** CIDRs ("10.0.0.0/8", "fd00::/8"), single addresses, or "unix". Throws on anything else. */
  constructor(entries: readonly string[] = []) {
    let unix = false;
    for (const raw of entries) {
      const entry = raw.trim();
      if (entry === 'unix') { unix = true; continue; }
      const [addr = '', bits, ...rest] = entry.split('/');
      const family = isIP(addr);
      const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
      if (family === 0 || rest.length > 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32) || (bits !== undefined && !/^\d+$/.test(bits))) {
        throw new TrustedProxyConfigError(`trusted proxy "${raw}" is not an address, a CIDR or "unix"`);
      }
      this.list.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4');
    }
    this.unix = unix;
    this.none = entries.length === 0;
  }

  /** Whether a connection from `address` (undefined: a Unix socket) may speak for its client. */
  trusts(address: string | undefined): boolean {
    if (this.none) return false;
    if (address === undefined || address === '') return this.unix;
    const v4 = unmapped(address);
    if (v4 !== undefined) return this.list.check(v4, 'ipv4');
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/** "::ffff:1.2.3.4" (an IPv4 peer of a dual-stack listener) as "1.2.3.4". */
function unmapped(address: string): string | undefined {
  if (!address.startsWith('::ffff:')) return isIP(address) === 4 ? address : undefined;
  const rest = address.slice(7);
  return isIP(rest) === 4 ? rest : undefined;
}

/** What a request's own connection and (if trusted) its forwarding headers say. */
export interface ClientOrigin {
  /** The client's address: CF-Connecting-IP for the worker. */
  address: string | undefined;
  /** The scheme the client used, for request.url and X-Forwarded-Proto. */
  proto: 'http' | 'https';
  /** X-Forwarded-For as the worker sees it: a trusted proxy's, as it sent it; none otherwise. */
  forwardedFor: string | undefined;
}

/** The forwarding headers a request carried (lower-case names; the last of each). */
export interface ForwardingHeaders {
  'cf-connecting-ip'?: string;
  'x-forwarded-for'?: string;
  'x-forwarded-proto'?: string;
}

/**
 * Decides where a request comes from. `peer` is the connection's remote address
 * (undefined for a Unix socket). From a trusted proxy: CF-Connecting-IP if it is an
 * address, else the nearest X-Forwarded-For entry that is not itself a trusted proxy,
 * else the peer; the scheme from X-Forwarded-Proto. From anyone else: the peer, plain http.
 */
export function clientOrigin(peer: string | undefined, forwarded: ForwardingHeaders, trusted: TrustedProxies): ClientOrigin {
  const self = peer === undefined ? undefined : unmapped(peer) ?? peer;
  if (!trusted.trusts(peer)) return { address: self, proto: 'http', forwardedFor: undefined };
  const proto = forwarded['x-forwarded-proto']?.split(',').pop()?.trim().toLowerCase() === 'https' ? 'https' : 'http';
  const xff = forwarded['x-forwarded-for'];
  const stated = forwarded['cf-connecting-ip']?.trim();
  if (stated && isIP(stated) !== 0) return { address: stated, proto, forwardedFor: xff };
  if (xff) {
    const hops = xff.split(',').map((h) => h.trim());
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (isIP(hop) === 0) break;
      if (i === 0 || !trusted.trusts(hop)) return { address: hop, proto, forwardedFor: xff };
    }
  }
  return { address: self, proto, forwardedFor: xff };
}
