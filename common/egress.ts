import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { EgressPolicy } from './api/policy.js';
import { EdgeError } from './errors.js';

// The egress policy's decisions, as pure functions of the policy, the destination and its
// resolved addresses: the agent enforces them at connect time (bindings/subrequests.ts) and
// the operator can parse an admin's rules with the same code before it publishes them.
//
// Order of the decision for one connection to host:port:
//  1. A host-name rule (`db.example.internal`, `*.example.internal`, with or without a port)
//     that names the host allows it whatever it resolves to: the admin named it.
//  2. Otherwise a name only the cluster can resolve (single-label, *.svc, *.cluster.local,
//     *.local, *.internal, *.localhost, *.home.arpa) is refused before any lookup.
//  3. The name is resolved once; an address is usable when an address rule (CIDR or address,
//     with or without a port) contains it, or when publicInternet is on and the address is
//     public unicast and not one of this host's own. The connection goes to the first
//     usable address, never to a name that is looked up again (DNS rebinding).

/** Why an address is not public unicast (the label an error shows), or 'public'. */
export type AddressClass =
  | 'public' | 'unspecified' | 'loopback' | 'private' | 'link-local' | 'carrier-grade NAT' | 'multicast'
  | 'reserved' | 'documentation' | 'benchmarking' | 'IPv4-embedding IPv6' | 'this host';

// IANA's special-purpose registries (RFC 6890 and its updates): every block that is not
// globally reachable unicast. IPv4-mapped IPv6 (::ffff:0:0/96) needs no entry of its own:
// BlockList checks a mapped address against the IPv4 blocks.
const SPECIAL: readonly [AddressClass, 'ipv4' | 'ipv6', string, number][] = [
  ['unspecified', 'ipv4', '0.0.0.0', 8],
  ['private', 'ipv4', '10.0.0.0', 8],
  ['carrier-grade NAT', 'ipv4', '100.64.0.0', 10],
  ['loopback', 'ipv4', '127.0.0.0', 8],
  ['link-local', 'ipv4', '169.254.0.0', 16],
  ['private', 'ipv4', '172.16.0.0', 12],
  ['reserved', 'ipv4', '192.0.0.0', 24],
  ['documentation', 'ipv4', '192.0.2.0', 24],
  ['reserved', 'ipv4', '192.88.99.0', 24],
  ['private', 'ipv4', '192.168.0.0', 16],
  ['benchmarking', 'ipv4', '198.18.0.0', 15],
  ['documentation', 'ipv4', '198.51.100.0', 24],
  ['documentation', 'ipv4', '203.0.113.0', 24],
  ['multicast', 'ipv4', '224.0.0.0', 4],
  ['reserved', 'ipv4', '240.0.0.0', 4],
  ['unspecified', 'ipv6', '::', 128],
  ['loopback', 'ipv6', '::1', 128],
  // IPv4-compatible (deprecated), NAT64 and 6to4 addresses carry an IPv4 address a gateway
  // may turn into a private one; Teredo sits in 2001::/32.
  ['IPv4-embedding IPv6', 'ipv6', '::', 96],
  ['IPv4-embedding IPv6', 'ipv6', '64:ff9b::', 96],
  ['IPv4-embedding IPv6', 'ipv6', '64:ff9b:1::', 48],
  ['reserved', 'ipv6', '100::', 64],
  ['IPv4-embedding IPv6', 'ipv6', '2001::', 32],
  ['reserved', 'ipv6', '2001::', 23],
  ['documentation', 'ipv6', '2001:db8::', 32],
  ['IPv4-embedding IPv6', 'ipv6', '2002::', 16],
  ['documentation', 'ipv6', '3fff::', 20],
  ['private', 'ipv6', 'fc00::', 7],
  ['link-local', 'ipv6', 'fe80::', 10],
  ['private', 'ipv6', 'fec0::', 10],
  ['multicast', 'ipv6', 'ff00::', 8],
];

const SPECIAL_LISTS: readonly [AddressClass, BlockList][] = SPECIAL.map(([cls, family, net, prefix]) => {
  const b = new BlockList();
  b.addSubnet(net, prefix, family);
  return [cls, b];
});

const familyOf = (address: string): 'ipv4' | 'ipv6' => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

/** The addresses of this machine's interfaces, refreshed at most every few seconds. */
let ownAddresses: { at: number; list: BlockList } | undefined;
const OWN_ADDRESSES_TTL_MS = 10_000;

function ownList(): BlockList {
  const now = Date.now();
  if (ownAddresses && now - ownAddresses.at < OWN_ADDRESSES_TTL_MS) return ownAddresses.list;
  const list = new BlockList();
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      // Scoped link-local addresses ("fe80::1%eth0") are link-local anyway.
      if (!a.address.includes('%')) list.addAddress(a.address, a.family === 'IPv6' ? 'ipv6' : 'ipv4');
    }
  }
  ownAddresses = { at: now, list };
  return list;
}

/** What kind of address this is; 'this host' for a public address of one of this machine's interfaces. */
export function classifyAddress(address: string): AddressClass {
  const family = familyOf(address);
  for (const [cls, list] of SPECIAL_LISTS) if (list.check(address, family)) return cls;
  if (ownList().check(address, family)) return 'this host';
  return 'public';
}

/** Names only a cluster's (or a host's) resolver answers: refused unless a rule names them. */
const CLUSTER_SUFFIXES = ['.svc', '.cluster.local', '.local', '.internal', '.localhost', '.localdomain', '.home.arpa'];

/** Why a host name is refused before lookup, or undefined when it may be resolved. */
export function clusterName(hostname: string): string | undefined {
  if (isIP(hostname)) return undefined;
  if (!hostname.includes('.')) return 'a single-label name';
  for (const s of CLUSTER_SUFFIXES) if (hostname.endsWith(s)) return `a cluster-internal name, *${s}`;
  return undefined;
}

export class EgressRuleError extends EdgeError {}

/** One parsed allowance. */
export type ParsedRule =
  | { kind: 'address'; rule: string; list: BlockList; port?: number }
  | { kind: 'name'; rule: string; name: string; wildcard: boolean; port?: number };

function portOf(rule: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port < 1 || port > 65_535) throw new EgressRuleError(`egress rule "${rule}": ${text} is not a port`);
  return port;
}

function addressRule(rule: string, net: string, port: number | undefined): ParsedRule {
  const [addr, prefixText, extra] = net.split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) throw new EgressRuleError(`egress rule "${rule}": "${net}" is not an address or CIDR`);
  const list = new BlockList();
  if (prefixText === undefined) {
    list.addAddress(addr, family === 6 ? 'ipv6' : 'ipv4');
  } else {
    const prefix = Number(prefixText);
    if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 6 ? 128 : 32)) throw new EgressRuleError(`egress rule "${rule}": /${prefixText} is not a prefix length`);
    list.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return { kind: 'address', rule, list, ...(port === undefined ? {} : { port }) };
}

const NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * Parses one allowance: `10.0.0.0/8`, `10.0.0.5`, `10.0.0.5:443`, `fd00::/8`,
 * `[fd00::1]:5432`, `db.example.internal`, `*.example.internal:443`.
 */
export function parseEgressRule(raw: string): ParsedRule {
  const rule = raw.trim().toLowerCase();
  if (rule.startsWith('[')) {
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(rule);
    if (!m) throw new EgressRuleError(`egress rule "${raw}": expected [IPv6 address or CIDR]:port`);
    return addressRule(raw, m[1]!, portOf(raw, m[2]));
  }
  // Two colons or more: a bare IPv6 address or CIDR, without a port.
  if ((rule.match(/:/g) ?? []).length > 1) return addressRule(raw, rule, undefined);
  const colon = rule.lastIndexOf(':');
  const host = colon < 0 ? rule : rule.slice(0, colon);
  const port = portOf(raw, colon < 0 ? undefined : rule.slice(colon + 1));
  if (isIP(host.split('/')[0]!) === 4) return addressRule(raw, host, port);
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length > 253 || !NAME.test(name)) throw new EgressRuleError(`egress rule "${raw}": not an address, CIDR, host name or *.pattern`);
  const wildcard = name.startsWith('*.');
  return { kind: 'name', rule: raw, name: wildcard ? name.slice(1) : name, wildcard, ...(port === undefined ? {} : { port }) };
}

export class EgressDeniedError extends EdgeError {}

const destination = (host: string, port: number): string => (isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`);

/** One resolved address. */
export interface ResolvedAddress { address: string; family: 4 | 6 }

/** The compiled policy of one worker: what it may connect to. */
export class EgressRules {
  readonly rules: readonly ParsedRule[];
  /** Allowances that do not parse: left out, so a bad rule opens nothing. */
  readonly invalid: readonly EgressRuleError[];

  /** `scope` names whose policy this is in messages (`namespace "shop"`). */
  constructor(readonly policy: EgressPolicy, readonly scope: string) {
    const rules: ParsedRule[] = [];
    const invalid: EgressRuleError[] = [];
    for (const raw of policy.allow) {
      try {
        rules.push(parseEgressRule(raw));
      } catch (err) {
        if (!(err instanceof EgressRuleError)) throw err;
        invalid.push(err);
      }
    }
    this.rules = rules;
    this.invalid = invalid;
  }

  /** The policy, as errors quote it. */
  describe(): string {
    const allow = this.policy.allow.length === 0 ? 'nothing else' : this.policy.allow.join(', ');
    return `the egress policy of ${this.scope} (${this.policy.publicInternet ? 'public internet' : 'no public internet'}; allowed: ${allow})`;
  }

  private portMatches(r: ParsedRule, port: number): boolean {
    return r.port === undefined || r.port === port;
  }

  /** True when a host-name rule names `hostname` (lower-case, no trailing dot) on `port`. */
  namedByRule(hostname: string, port: number): boolean {
    return this.rules.some((r) => r.kind === 'name' && this.portMatches(r, port)
      && (r.wildcard ? hostname.endsWith(r.name) && hostname.length > r.name.length : hostname === r.name));
  }

  /** Undefined when the address may be connected to; else why not. */
  refusal(address: string, port: number): AddressClass | 'not public' | undefined {
    const family = familyOf(address);
    if (this.rules.some((r) => r.kind === 'address' && this.portMatches(r, port) && r.list.check(address, family))) return undefined;
    const cls = classifyAddress(address);
    if (cls !== 'public') return cls;
    return this.policy.publicInternet ? undefined : 'not public';
  }

  /**
   * The first resolved address of host:port this policy allows; throws EgressDeniedError
   * naming the destination and the policy. `resolve` is called at most once, and not for
   * an address literal or a refused name.
   */
  async pick(hostname: string, port: number, resolve: (hostname: string) => Promise<ResolvedAddress[]>): Promise<ResolvedAddress> {
    const host = (hostname.startsWith('[') ? hostname.slice(1, -1) : hostname).toLowerCase().replace(/\.$/, '');
    const literal = isIP(host);
    const named = literal === 0 && this.namedByRule(host, port);
    if (!named && literal === 0) {
      const why = clusterName(host);
      if (why) throw this.denied(`${destination(host, port)} (${why})`, host, port);
    }
    const addresses = literal !== 0 ? [{ address: host, family: literal as 4 | 6 }] : await resolve(host);
    if (addresses.length === 0) throw new EgressDeniedError(`${host} has no address`, { context: { destination: destination(host, port) } });
    if (named) return addresses[0]!;
    const refused: string[] = [];
    for (const a of addresses) {
      const why = this.refusal(a.address, port);
      if (why === undefined) return a;
      refused.push(`${a.address} (${why})`);
    }
    const dest = destination(host, port);
    const shown = literal !== 0 ? `${dest} (${refused[0]!.replace(/^\S+ \((.*)\)$/, '$1')})` : `${dest}, which resolves to ${refused.join(', ')},`;
    throw this.denied(shown, host, port);
  }

  private denied(what: string, host: string, port: number): EgressDeniedError {
    return new EgressDeniedError(`egress to ${what} is not allowed by ${this.describe()}`, { context: { destination: destination(host, port) } });
  }
}
