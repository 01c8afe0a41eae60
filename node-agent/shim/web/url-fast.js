// The common case of a URL parse, done in the isolate: an absolute http: or https: URL of
// plain ASCII whose WHATWG parse only lowercases the scheme and host, drops a default port
// and inserts an empty path. Anything else (credentials, IP addresses, IDNA, dot segments,
// characters the parser would percent-encode or strip, other schemes, a base) returns
// undefined, and the host's WHATWG parser decides (url.js). A parse through the host is a
// synchronous round trip to its thread (~0.2 ms here); `new URL(request.url)` is in most
// workers' every request. test/unit/shim/url-fast.test.ts holds it to Node's parser.

// Whole input: characters no part of such a URL encodes, strips or treats specially.
// Excluded: controls, space, non-ASCII, " < > ` { } | ^ [ ] \ ' (encoded, or IPv6/backslash).
const SAFE = /^[A-Za-z0-9\-._~!$&()*+,;=:@/?#%]*$/;
const SCHEME = /^([A-Za-z][A-Za-z0-9+\-.]*):\/\//;
const HOSTNAME = /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$/;
// A last label that makes the host an IPv4 address (the WHATWG "ends in a number" check).
const NUMERIC_LABEL = /^(0[xX][0-9A-Fa-f]*|[0-9]+)$/;
const PORT = /^[0-9]*$/;

/** A dot segment, also in its percent-encoded forms ("%2e", ".%2E", ...). */
function isDotSegment(seg) {
  if (seg.length === 0 || seg.length > 6) return false;
  const s = seg.replace(/%2[eE]/g, '.');
  return s === '.' || s === '..';
}

/** The host's record for `input`, or undefined when this is not the common case. */
export function fastParseURL(input) {
  if (input.length > 2048 || !SAFE.test(input)) return undefined;
  const m = SCHEME.exec(input);
  if (m === null) return undefined;
  const scheme = m[1].toLowerCase();
  const defaultPort = scheme === 'http' ? '80' : scheme === 'https' ? '443' : undefined;
  if (defaultPort === undefined) return undefined;
  const start = m[0].length;
  let end = start;
  while (end < input.length) {
    const c = input.charCodeAt(end);
    if (c === 0x2f || c === 0x3f || c === 0x23) break; // / ? #
    end++;
  }
  const authority = input.slice(start, end);
  if (authority.includes('@') || authority.includes('%')) return undefined;
  const colon = authority.indexOf(':');
  if (colon !== authority.lastIndexOf(':')) return undefined;
  const rawHost = colon < 0 ? authority : authority.slice(0, colon);
  const rawPort = colon < 0 ? '' : authority.slice(colon + 1);
  if (!HOSTNAME.test(rawHost) || !PORT.test(rawPort)) return undefined;
  const hostname = rawHost.toLowerCase();
  if (hostname.startsWith('xn--') || hostname.includes('.xn--')) return undefined;
  const labels = hostname.split('.');
  const last = labels[labels.length - 1] === '' ? labels[labels.length - 2] : labels[labels.length - 1];
  if (last === undefined || NUMERIC_LABEL.test(last)) return undefined;
  let port = '';
  if (rawPort !== '') {
    if (rawPort.length > 5) return undefined;
    const n = Number(rawPort);
    if (n > 65535) return undefined;
    port = String(n) === defaultPort ? '' : String(n);
  }
  const hashAt = input.indexOf('#', end);
  const beforeHash = hashAt < 0 ? input.slice(end) : input.slice(end, hashAt);
  const fragment = hashAt < 0 ? null : input.slice(hashAt + 1);
  const queryAt = beforeHash.indexOf('?');
  const path = queryAt < 0 ? beforeHash : beforeHash.slice(0, queryAt);
  const query = queryAt < 0 ? null : beforeHash.slice(queryAt + 1);
  const segments = path.split('/');
  for (let k = 1; k < segments.length; k++) if (isDotSegment(segments[k])) return undefined;
  const pathname = path === '' ? '/' : path;
  const protocol = `${scheme}:`;
  const host = port === '' ? hostname : `${hostname}:${port}`;
  const origin = `${protocol}//${host}`;
  return {
    href: `${origin}${pathname}${query === null ? '' : `?${query}`}${fragment === null ? '' : `#${fragment}`}`,
    origin, protocol, username: '', password: '', host, hostname, port, pathname,
    search: query === null || query === '' ? '' : `?${query}`,
    hash: fragment === null || fragment === '' ? '' : `#${fragment}`,
  };
}
