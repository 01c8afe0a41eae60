import { describe, expect, it } from 'vitest';
import { clientOrigin, TrustedProxies, TrustedProxyConfigError } from '../../node-agent/serving/trusted-proxy.js';
import { HttpError } from '../../node-agent/serving/request-body.js';
import { requestUrl } from '../../node-agent/serving/http-front.js';

// The trust decision a front (this agent's, or a front process forwarding to isolate
// hosts over a Unix socket) makes about a request's forwarding headers.

describe('TrustedProxies', () => {
  it('trusts addresses in its CIDRs (IPv4, IPv6, IPv4-mapped), and Unix-socket peers only when told', () => {
    const t = new TrustedProxies(['10.0.0.0/8', '192.0.2.1', 'fd00::/8']);
    expect(t.trusts('10.1.2.3')).toBe(true);
    expect(t.trusts('::ffff:10.1.2.3')).toBe(true);
    expect(t.trusts('192.0.2.1')).toBe(true);
    expect(t.trusts('192.0.2.2')).toBe(false);
    expect(t.trusts('fd12::1')).toBe(true);
    expect(t.trusts('2001:db8::1')).toBe(false);
    expect(t.trusts(undefined)).toBe(false);
    expect(new TrustedProxies(['unix']).trusts(undefined)).toBe(true);
    expect(new TrustedProxies().trusts('127.0.0.1')).toBe(false);
  });

  it('refuses entries that are not addresses or CIDRs', () => {
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '::1/129', '10.0.0.0/x', '']) {
      expect(() => new TrustedProxies([bad]), bad).toThrow(TrustedProxyConfigError);
    }
  });
});

describe('clientOrigin', () => {
  const trusted = new TrustedProxies(['10.0.0.0/8']);
  it('from an untrusted peer: the peer, plain http, no X-Forwarded-For', () => {
    expect(clientOrigin('::ffff:203.0.113.5', { 'cf-connecting-ip': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-for': '6.6.6.6' }, trusted))
      .toEqual({ address: '203.0.113.5', proto: 'http', forwardedFor: undefined });
  });
  it('from a trusted proxy: CF-Connecting-IP, else the nearest untrusted X-Forwarded-For hop', () => {
    expect(clientOrigin('10.0.0.1', { 'cf-connecting-ip': '198.51.100.1', 'x-forwarded-proto': 'https' }, trusted))
      .toEqual({ address: '198.51.100.1', proto: 'https', forwardedFor: undefined });
    expect(clientOrigin('10.0.0.1', { 'x-forwarded-for': '6.6.6.6, 198.51.100.2, 10.9.9.9' }, trusted).address).toBe('198.51.100.2');
    expect(clientOrigin('10.0.0.1', { 'x-forwarded-for': '10.2.2.2, 10.9.9.9' }, trusted).address).toBe('10.2.2.2');
    expect(clientOrigin('10.0.0.1', { 'x-forwarded-for': 'junk, 10.9.9.9' }, trusted).address).toBe('10.0.0.1');
  });
});

describe('requestUrl', () => {
  it('keeps the authority the Host header names and normalizes the path', () => {
    expect(requestUrl('http', 'shop.test', '//evil.example/login').href).toBe('http://shop.test//evil.example/login');
    expect(requestUrl('http', 'Shop.Test:80', '/a/../b?q=1').href).toBe('http://shop.test/b?q=1');
    expect(requestUrl('https', undefined, '/').href).toBe('https://localhost/');
    for (const [host, target] of [['a/b', '/'], ['a@b', '/'], ['a\\b', '/'], ['', '/'], ['a', 'http://b/'], ['a', '*'], ['a:99999', '/']] as const) {
      expect(() => requestUrl('http', host, target), `${host} ${target}`).toThrow(HttpError);
    }
  });
});
