import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { EdgeError } from '../common/errors.js';

// wrangler's static assets (`assets.directory`), for small sites: the files are embedded in
// the bundle as a map from URL path to bytes and content type, `env.<binding>.fetch(request)`
// answers from it, and the worker's default export is wrapped so that a GET or HEAD of an
// asset is answered before the worker runs (wrangler's default, `run_worker_first = false`);
// anything else goes to the worker. The bundle, assets included, must fit a ConfigMap (1 MiB),
// so this is for a few hundred KiB of assets; larger sites need the agent to serve them.

export class AssetsError extends EdgeError {}

export interface AssetsConfig {
  directory: string;
  binding?: string;
  runWorkerFirst?: boolean;
  notFoundHandling?: 'none' | '404-page' | 'single-page-application';
  htmlHandling?: 'auto-trailing-slash' | 'none';
}

/** Files at most this big in all: the rest of the bundle needs room in the ConfigMap too. */
export const MAX_ASSET_BYTES = 700 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.htm': 'text/html; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8', '.md': 'text/markdown; charset=utf-8', '.xml': 'application/xml; charset=utf-8',
  '.csv': 'text/csv; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg',
  '.gif': 'image/gif', '.webp': 'image/webp', '.avif': 'image/avif', '.ico': 'image/x-icon', '.wasm': 'application/wasm',
  '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.otf': 'font/otf', '.pdf': 'application/pdf',
  '.map': 'application/json; charset=utf-8', '.webmanifest': 'application/manifest+json', '.mp4': 'video/mp4', '.webm': 'video/webm',
  '.mp3': 'audio/mpeg', '.wav': 'audio/wav', '.zip': 'application/zip',
};
export const contentType = (file: string): string => CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';

/** Every file under `dir` as [URL path, absolute path], skipping `.assetsignore` and dot files as wrangler does. */
function walk(dir: string, root = dir): [string, string][] {
  const out: [string, string][] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, root));
    else if (e.isFile()) out.push([`/${relative(root, p).split(sep).join('/')}`, p]);
  }
  return out;
}

/** The JS module holding the assets and the fetcher over them. */
export function assetsModule(cfg: AssetsConfig): { code: string; files: number; bytes: number } {
  let st;
  try { st = statSync(cfg.directory); } catch { throw new AssetsError(`assets.directory ${cfg.directory} does not exist`); }
  if (!st.isDirectory()) throw new AssetsError(`assets.directory ${cfg.directory} is not a directory`);
  const files = walk(cfg.directory);
  let bytes = 0;
  const entries = files.map(([path, abs]) => {
    const data = readFileSync(abs);
    bytes += data.length;
    return `  ${JSON.stringify(path)}: [${JSON.stringify(contentType(abs))}, ${JSON.stringify(data.toString('base64'))}],`;
  });
  if (bytes > MAX_ASSET_BYTES) {
    throw new AssetsError(`assets.directory ${cfg.directory} holds ${bytes} bytes; assets are embedded in the bundle, which a ConfigMap caps at 1 MiB, so at most ${MAX_ASSET_BYTES} bytes of assets are served`);
  }
  const code = `const FILES = {\n${entries.join('\n')}\n};
const NOT_FOUND = ${JSON.stringify(cfg.notFoundHandling ?? 'none')};
const HTML = ${JSON.stringify(cfg.htmlHandling ?? 'auto-trailing-slash')};
const decoded = new Map();
function body(path) {
  let b = decoded.get(path);
  if (!b) { const s = atob(FILES[path][1]); b = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i); decoded.set(path, b); }
  return b;
}
function lookup(pathname) {
  let p;
  try { p = decodeURIComponent(pathname); } catch { return undefined; }
  if (FILES[p]) return p;
  if (HTML === 'none') return undefined;
  if (p.endsWith('/') && FILES[p + 'index.html']) return p + 'index.html';
  if (!p.endsWith('/') && FILES[p + '.html']) return p + '.html';
  if (!p.endsWith('/') && FILES[p + '/index.html']) return p + '/index.html';
  return undefined;
}
function respond(path, request, status = 200) {
  const headers = { 'content-type': FILES[path][0], 'content-length': String(body(path).length) };
  return new Response(request.method === 'HEAD' ? null : body(path), { status, headers });
}
/** The asset for this request, or undefined (not a GET/HEAD, or no such file). */
export function matchAsset(request) {
  if (request.method !== 'GET' && request.method !== 'HEAD') return undefined;
  const path = lookup(new URL(request.url).pathname);
  return path === undefined ? undefined : respond(path, request);
}
export const ASSETS = {
  async fetch(input, init) {
    const request = input instanceof Request ? input : new Request(typeof input === 'string' && input.startsWith('/') ? 'http://assets' + input : input, init);
    const hit = matchAsset(request);
    if (hit) return hit;
    if (request.method === 'GET' || request.method === 'HEAD') {
      if (NOT_FOUND === 'single-page-application' && FILES['/index.html']) return respond('/index.html', request);
      if (NOT_FOUND === '404-page') {
        const parts = new URL(request.url).pathname.split('/').slice(0, -1);
        for (let i = parts.length; i > 0; i--) { const p = parts.slice(0, i).join('/') + '/404.html'; if (FILES[p]) return respond(p, request, 404); }
      }
    }
    return new Response('Not Found', { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' } });
  },
};
`;
  return { code, files: files.length, bytes };
}

/**
 * The entry that wraps the worker's module `main` (undefined: an assets-only worker): its
 * named exports pass through, its default export gets env.<binding> and, unless
 * runWorkerFirst, the assets answered before it.
 */
export function assetsEntry(main: string | undefined, assetsSpecifier: string, cfg: AssetsConfig): string {
  const binding = cfg.binding;
  const first = !cfg.runWorkerFirst;
  const lines = [
    `import { ASSETS, matchAsset } from ${JSON.stringify(assetsSpecifier)};`,
    main ? `import worker from ${JSON.stringify(main)};\nexport * from ${JSON.stringify(main)};` : 'const worker = undefined;',
    `const withAssets = (env) => ${binding ? `({ ...env, ${JSON.stringify(binding)}: ASSETS })` : 'env'};`,
    `const serve = async (request, run) => {`,
    first ? `  const hit = matchAsset(request); if (hit) return hit;` : '',
    `  return run ? run() : ASSETS.fetch(request);`,
    `};`,
    `let wrapped;`,
    `if (typeof worker === 'function') {`,
    // A class (WorkerEntrypoint): a subclass whose env has the binding and whose fetch serves assets first.
    `  wrapped = class extends worker {`,
    `    constructor(ctx, env) { super(ctx, withAssets(env)); }`,
    `    fetch(request) { return serve(request, typeof super.fetch === 'function' ? () => super.fetch(request) : undefined); }`,
    `  };`,
    `} else {`,
    `  const w = worker ?? {};`,
    `  wrapped = { ...w, fetch(request, env, ctx) { return serve(request, typeof w.fetch === 'function' ? () => w.fetch.call(w, request, withAssets(env), ctx) : undefined); } };`,
    `  for (const k of ['scheduled', 'queue', 'tail', 'email']) if (typeof w[k] === 'function') wrapped[k] = (e, env, ctx) => w[k].call(w, e, withAssets(env), ctx);`,
    `}`,
    `export default wrapped;`,
  ];
  return lines.filter(Boolean).join('\n') + '\n';
}
