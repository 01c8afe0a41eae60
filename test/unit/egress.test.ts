import { describe, expect, it } from 'vitest';
import { classifyAddress, clusterName, EgressDeniedError, EgressRuleError, EgressRules, parseEgressRule, type ResolvedAddress } from '../../common/egress.js';

// The egress policy's decisions (common/egress.ts), without sockets: which addresses are
// public unicast, which names are the cluster's, how allowances parse and combine.

describe('classifyAddress', () => {
  it.each([
    ['8.8.8.8', 'public'], ['1.1.1.1', 'public'], ['2606:4700::1111', 'public'], ['::ffff:8.8.8.8', 'public'],
    ['127.0.0.1', 'loopback'], ['127.255.0.9', 'loopback'], ['::1', 'loopback'], ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'],
    ['0.0.0.0', 'unspecified'], ['::', 'unspecified'],
    ['10.1.2.3', 'private'], ['172.20.0.1', 'private'], ['192.168.1.1', 'private'], ['fd00:ec2::254', 'private'], ['::ffff:10.0.0.1', 'private'],
    ['169.254.169.254', 'link-local'], ['fe80::1', 'link-local'],
    ['100.64.0.1', 'carrier-grade NAT'], ['224.0.0.251', 'multicast'], ['ff02::1', 'multicast'], ['255.255.255.255', 'reserved'],
    ['64:ff9b::a00:1', 'IPv4-embedding IPv6'], ['2002:a00:1::', 'IPv4-embedding IPv6'], ['2001::1', 'IPv4-embedding IPv6'], ['::a00:1', 'IPv4-embedding IPv6'],
    ['192.0.2.1', 'documentation'], ['198.18.0.1', 'benchmarking'],
  ])('%s is %s', (address, cls) => {
    expect(classifyAddress(address)).toBe(cls);
  });
});

describe('clusterName', () => {
  it('refuses names only a cluster resolves, not public ones', () => {
    for (const n of ['localhost', 'nats', 'kubernetes.default.svc', 'a.b.svc.cluster.local', 'printer.local', 'metadata.google.internal', 'x.localhost']) {
      expect(clusterName(n), n).toBeDefined();
    }
    for (const n of ['example.com', 'api.example.co.uk', '93.184.216.34', 'svc.example.com']) expect(clusterName(n), n).toBeUndefined();
  });
});

describe('parseEgressRule', () => {
  it('parses addresses, CIDRs, names and patterns, with and without a port', () => {
    expect(parseEgressRule('10.0.0.0/8')).toMatchObject({ kind: 'address' });
    expect(parseEgressRule('127.0.0.1:8081')).toMatchObject({ kind: 'address', port: 8081 });
    expect(parseEgressRule('[fd00::1]:5432')).toMatchObject({ kind: 'address', port: 5432 });
    expect(parseEgressRule('fd00::/8')).toMatchObject({ kind: 'address' });
    expect(parseEgressRule('DB.example.internal.')).toMatchObject({ kind: 'name', name: 'db.example.internal', wildcard: false });
    expect(parseEgressRule('*.svc.cluster.local:443')).toMatchObject({ kind: 'name', name: '.svc.cluster.local', wildcard: true, port: 443 });
  });

  it.each(['10.0.0.0/33', '10.0.0.1:0', '10.0.0.1:99999', 'bad_name', '*', '[::1', '1.2.3.4/8/9', 'a..b'])('refuses %j', (rule) => {
    expect(() => parseEgressRule(rule)).toThrow(EgressRuleError);
  });
});

describe('EgressRules.pick', () => {
  const dns: Record<string, ResolvedAddress[]> = {
    'public.example': [{ address: '93.184.216.34', family: 4 }],
    'rebind.example': [{ address: '127.0.0.1', family: 4 }],
    'mixed.example': [{ address: '10.0.0.1', family: 4 }, { address: '93.184.216.34', family: 4 }],
    'db.corp.example': [{ address: '10.20.0.5', family: 4 }],
  };
  let lookups: string[] = [];
  const resolve = async (h: string) => { lookups.push(h); return dns[h] ?? []; };
  const rules = (allow: string[], publicInternet = true) => new EgressRules({ publicInternet, allow }, 'namespace "t"');

  it('connects to the first address it allows, looking the name up once', async () => {
    lookups = [];
    expect(await rules([]).pick('public.example', 443, resolve)).toEqual({ address: '93.184.216.34', family: 4 });
    expect(await rules([]).pick('mixed.example', 443, resolve)).toEqual({ address: '93.184.216.34', family: 4 });
    expect(lookups).toEqual(['public.example', 'mixed.example']);
  });

  it('refuses loopback behind a name, cluster names without a lookup, and names the policy', async () => {
    lookups = [];
    await expect(rules([]).pick('rebind.example', 80, resolve)).rejects.toThrow(
      'egress to rebind.example:80, which resolves to 127.0.0.1 (loopback), is not allowed by the egress policy of namespace "t" (public internet; allowed: nothing else)');
    await expect(rules([]).pick('nats.edge-system.svc.cluster.local', 4222, resolve)).rejects.toBeInstanceOf(EgressDeniedError);
    await expect(rules([]).pick('[::1]', 80, resolve)).rejects.toThrow('egress to [::1]:80 (loopback)');
    expect(lookups).toEqual(['rebind.example']);
  });

  it('opens exactly what the allowances name: address and port, names and patterns', async () => {
    const r = rules(['127.0.0.1:8081', 'db.corp.example', '*.svc.cluster.local:443', '10.20.0.0/16:5432']);
    expect((await r.pick('127.0.0.1', 8081, resolve)).address).toBe('127.0.0.1');
    await expect(r.pick('127.0.0.1', 8082, resolve)).rejects.toBeInstanceOf(EgressDeniedError);
    expect((await r.pick('db.corp.example', 80, resolve)).address).toBe('10.20.0.5');
    await expect(r.pick('api.ns.svc.cluster.local', 80, resolve)).rejects.toBeInstanceOf(EgressDeniedError);
    expect(await r.pick('10.20.1.1', 5432, resolve)).toEqual({ address: '10.20.1.1', family: 4 });
    await expect(r.pick('10.20.1.1', 22, resolve)).rejects.toBeInstanceOf(EgressDeniedError);
  });

  it('publicInternet: false leaves only the allowances', async () => {
    await expect(rules([], false).pick('public.example', 443, resolve)).rejects.toThrow(/93\.184\.216\.34 \(not public\)/);
    expect((await rules(['93.184.216.0/24'], false).pick('public.example', 443, resolve)).address).toBe('93.184.216.34');
  });

  it('leaves out an allowance that does not parse (it opens nothing)', () => {
    const r = rules(['10.0.0.0/99', '127.0.0.1:8081']);
    expect(r.rules).toHaveLength(1);
    expect(r.invalid.map((e) => e.message)).toEqual([expect.stringContaining('10.0.0.0/99') as unknown]);
  });
});
