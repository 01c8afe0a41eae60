import type { Route } from '../../common/api/index.js';

// Maps (Host, path) to a worker the way spec.routes declares: an exact host beats a
// "*." wildcard, then the longest path prefix wins. A prefix matches whole path segments
// ("/api" matches "/api" and "/api/x", not "/apix") unless it ends in "/".

export interface RouteTarget<T> {
  key: string;
  routes: Route[];
  target: T;
}

interface Entry<T> { prefix: string; key: string; target: T }

export class Router<T> {
  private exact = new Map<string, Entry<T>[]>();
  private wildcard = new Map<string, Entry<T>[]>();
  /** Routes claimed by more than one worker: the first key in sort order keeps them. */
  conflicts: string[] = [];

  static build<T>(targets: RouteTarget<T>[]): Router<T> {
    const r = new Router<T>();
    const seen = new Map<string, string>();
    for (const t of [...targets].sort((a, b) => a.key.localeCompare(b.key))) {
      for (const route of t.routes) {
        const host = route.host.toLowerCase();
        const id = `${host}${route.pathPrefix}`;
        const owner = seen.get(id);
        if (owner !== undefined) {
          r.conflicts.push(`${id} is claimed by ${owner} and ${t.key}; ${owner} keeps it`);
          continue;
        }
        seen.set(id, t.key);
        const table = host.startsWith('*.') ? r.wildcard : r.exact;
        const name = host.startsWith('*.') ? host.slice(2) : host;
        const list = table.get(name) ?? [];
        list.push({ prefix: route.pathPrefix, key: t.key, target: t.target });
        // Longest prefix first, so the first match is the most specific.
        list.sort((a, b) => b.prefix.length - a.prefix.length);
        table.set(name, list);
      }
    }
    return r;
  }

  private static pick<T>(list: Entry<T>[] | undefined, path: string): Entry<T> | undefined {
    if (!list) return undefined;
    return list.find((e) => e.prefix.endsWith('/') ? path.startsWith(e.prefix)
      : path === e.prefix || path.startsWith(`${e.prefix}/`));
  }

  /** hostHeader may carry a port; path is the URL path without the query. */
  match(hostHeader: string, path: string): { key: string; target: T } | undefined {
    let host = hostHeader.toLowerCase();
    const colon = host.lastIndexOf(':');
    if (colon >= 0 && host.indexOf(']', colon) < 0) host = host.slice(0, colon);
    if (host.endsWith('.')) host = host.slice(0, -1);
    const exact = Router.pick(this.exact.get(host), path);
    if (exact) return exact;
    // "*.example.com" matches a.example.com and a.b.example.com, not example.com.
    for (let i = host.indexOf('.'); i >= 0; i = host.indexOf('.', i + 1)) {
      const hit = Router.pick(this.wildcard.get(host.slice(i + 1)), path);
      if (hit) return hit;
    }
    return undefined;
  }
}
