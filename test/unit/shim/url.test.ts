import { describe, expect, it } from 'vitest';
import { evaluate, evaluateError } from './run-worker.js';

describe('URL', () => {
  it('parses into the WHATWG components', async () => {
    expect(await evaluate(`
      const u = new URL('HTTPS://user:pa%20ss@Example.COM:443/a/./b/../c?x=1#frag');
      return { href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password, host: u.host,
        hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash, json: JSON.stringify(u), str: String(u) };
    `)).toEqual({
      href: 'https://user:pa%20ss@example.com/a/c?x=1#frag', origin: 'https://example.com', protocol: 'https:', username: 'user',
      password: 'pa%20ss', host: 'example.com', hostname: 'example.com', port: '', pathname: '/a/c', search: '?x=1', hash: '#frag',
      json: '"https://user:pa%20ss@example.com/a/c?x=1#frag"', str: 'https://user:pa%20ss@example.com/a/c?x=1#frag',
    });
  });

  it('resolves relative URLs against a base', async () => {
    expect(await evaluate(`
      const base = 'http://example.com/dir/page?q#h';
      return ['../up', 'same', '/root', '//other.org/x', '?only', '#only', 'https:rel'].map((r) => new URL(r, base).href)
        .concat(new URL('x', new URL('http://a.test/b/c')).href);
    `)).toEqual([
      'http://example.com/up', 'http://example.com/dir/same', 'http://example.com/root', 'http://other.org/x',
      'http://example.com/dir/page?only', 'http://example.com/dir/page?q#only', 'https://rel/', 'http://a.test/b/x',
    ]);
  });

  it('handles IPv6 and IPv4 hosts, IDNA and percent-encoding', async () => {
    expect(await evaluate(`
      return {
        v6: new URL('http://[2001:DB8::1]:8080/').host,
        v6host: new URL('http://[::ffff:192.168.0.1]/').hostname,
        v4: new URL('http://0x7f.1/').hostname,
        idna: new URL('https://münchen.de/').hostname,
        idnaUpper: new URL('https://BÜCHER.example/').host,
        path: new URL('http://x.test/a b/ü?q=ü w#f g').href,
        keepPct: new URL('http://x.test/%7e%2F').pathname,
      };
    `)).toEqual({
      v6: '[2001:db8::1]:8080', v6host: '[::ffff:c0a8:1]', v4: '127.0.0.1', idna: 'xn--mnchen-3ya.de', idnaUpper: 'xn--bcher-kva.example',
      path: 'http://x.test/a%20b/%C3%BC?q=%C3%BC%20w#f%20g', keepPct: '/%7e%2F',
    });
  });

  it('treats special and non-special schemes differently', async () => {
    expect(await evaluate(`
      return [
        new URL('HTTP://EXAMPLE.com:80/').href,
        new URL('ws://x.test:80/').port,
        new URL('file:///C:/a/../b').href,
        new URL('mailto:Someone@Example.com').pathname,
        new URL('foo://Host/a b').href,
        new URL('http:\\\\\\\\x.test\\\\path').href,
        new URL('blob:https://a.test/uuid').origin,
        new URL('data:text/plain,hi').origin,
      ];
    `)).toEqual([
      'http://example.com/', '', 'file:///C:/b', 'Someone@Example.com', 'foo://Host/a%20b', 'http://x.test/path', 'https://a.test', 'null',
    ]);
  });

  it('throws TypeError for invalid URLs; canParse and parse do not', async () => {
    for (const bad of ['not a url', 'http://', 'https://exa mple.com/', 'http://[::1', 'http://a:99999/']) {
      expect(await evaluateError(`new URL(${JSON.stringify(bad)})`), bad).toMatchObject({ type: 'TypeError', message: expect.stringContaining('Invalid URL') });
    }
    expect(await evaluateError(`new URL('x', 'not a base')`)).toMatchObject({ type: 'TypeError' });
    expect(await evaluate(`return [URL.canParse('http://x.test'), URL.canParse('x'), URL.canParse('x', 'http://b.test'), URL.parse('nope'), URL.parse('/a', 'http://b.test').href]`))
      .toEqual([true, false, true, null, 'http://b.test/a']);
  });

  it('applies setters with the standard rules', async () => {
    expect(await evaluate(`
      const u = new URL('http://example.com/path?a=1#h');
      u.pathname = '/new path';
      u.hostname = 'other.test';
      u.port = '8080';
      u.hash = 'x y';
      u.protocol = 'https';
      const before = u.href;
      u.port = 'junk';
      u.protocol = 'mailto';
      let hrefError;
      try { u.href = 'not a url'; } catch (e) { hrefError = e.constructor.name; }
      return { before, after: u.href, hrefError };
    `)).toEqual({ before: 'https://other.test:8080/new%20path?a=1#x%20y', after: 'https://other.test:8080/new%20path?a=1#x%20y', hrefError: 'TypeError' });
  });
});

describe('URLSearchParams', () => {
  it('parses and serializes application/x-www-form-urlencoded', async () => {
    expect(await evaluate(`
      const p = new URLSearchParams('?a=1&b=x+y&c=%E2%9C%93&&d&e=%zz&a=2');
      return { entries: [...p], all: p.getAll('a'), size: p.size, str: p.toString(),
        fromObj: new URLSearchParams({ 'k y': 'v&=/?~*' }).toString(), fromPairs: new URLSearchParams([['a', 'é']]).toString(),
        has: [p.has('a', '2'), p.has('a', '3')] };
    `)).toEqual({
      entries: [['a', '1'], ['b', 'x y'], ['c', '✓'], ['d', ''], ['e', '%zz'], ['a', '2']], all: ['1', '2'], size: 6,
      str: 'a=1&b=x+y&c=%E2%9C%93&d=&e=%25zz&a=2', fromObj: 'k+y=v%26%3D%2F%3F%7E*', fromPairs: 'a=%C3%A9', has: [true, false],
    });
  });

  it('set, delete and a stable sort', async () => {
    expect(await evaluate(`
      const p = new URLSearchParams('z=1&a=2&z=3&b=4&a=5');
      p.sort();
      const sorted = p.toString();
      p.set('z', 'only');
      p.delete('a', '5');
      return [sorted, p.toString()];
    `)).toEqual(['a=2&a=5&b=4&z=1&z=3', 'a=2&b=4&z=only']);
  });

  it('is live-linked to its URL both ways', async () => {
    expect(await evaluate(`
      const u = new URL('https://example.com/?a=1');
      const p = u.searchParams;
      p.append('b', 'x y');
      const afterAppend = u.href;
      u.search = '?c=3';
      const afterSearch = [...p];
      p.delete('c');
      const afterDelete = u.href;
      u.href = 'https://example.com/?d=4';
      return { same: p === u.searchParams, afterAppend, afterSearch, afterDelete, afterHref: p.get('d') };
    `)).toEqual({
      same: true, afterAppend: 'https://example.com/?a=1&b=x+y', afterSearch: [['c', '3']], afterDelete: 'https://example.com/', afterHref: '4',
    });
  });
});
