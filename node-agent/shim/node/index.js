// nodejs_compat: the Node built-in modules Workers provides, from well-kept npm
// implementations (buffer, events, util, readable-stream, string_decoder, path-browserify,
// url: all MIT) plus our own async_hooks (async-context.js), crypto and process.
// Bundled into its own script (node-agent/isolate/shim-bundle.ts: nodeCompatSource), not
// into the shim's snapshot: only isolates of workers with the flag evaluate it, when the
// worker loads (worker-isolate.ts). It defines __edgeNodeInstall(envText, digest), which
// installs the globals and leaves the modules in __edgeNodeModules for the synthetic
// `node:*` modules (common/builtin-modules.ts) to take; the host deletes that global once
// the worker's module has been evaluated.
// Each polyfill is a CommonJS package that esbuild wraps in a function run on its first
// require(): the modules a worker does not import are never evaluated (top-level cost is
// paid per isolate). Buffer and events are taken at install (the globals need them).
/* global require */
/* eslint-disable @typescript-eslint/no-require-imports -- require() is what makes each polyfill lazy (see above) */
import { AsyncLocalStorage, AsyncResource, executionAsyncId, triggerAsyncId, createHook, installPropagation, bindCurrent } from './async-context.js';
import { makeCrypto } from './crypto.js';
import { diagnosticsChannel, os } from './small.js';

const g = globalThis;

function makeProcess(envText) {
  const proc = new (require('events').EventEmitter)();
  const start = Date.now();
  const hrtime = (prev) => {
    const ns = BigInt(Math.round(g.performance.now() * 1e6));
    const t = [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
    if (!prev) return t;
    let s = t[0] - prev[0], n = t[1] - prev[1];
    if (n < 0) { s -= 1; n += 1e9; }
    return [s, n];
  };
  hrtime.bigint = () => BigInt(Math.round(g.performance.now() * 1e6));
  Object.assign(proc, {
    // Workers: the text bindings (vars), as process.env with nodejs_compat.
    env: { ...envText },
    version: 'v22.14.0',
    versions: { node: '22.14.0' },
    release: { name: 'node' },
    platform: 'linux', arch: 'x64', argv: [], argv0: 'node', execArgv: [], pid: 1, ppid: 0, title: 'workerd',
    exitCode: undefined,
    features: {},
    browser: false,
    cwd: () => '/',
    chdir: () => { throw Object.assign(new Error('process.chdir() is not supported in a worker'), { code: 'ERR_METHOD_NOT_IMPLEMENTED' }); },
    umask: () => 0o22,
    uptime: () => (Date.now() - start) / 1000,
    hrtime,
    memoryUsage: () => ({ rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 }),
    nextTick: (cb, ...args) => {
      if (typeof cb !== 'function') throw new TypeError('The "callback" argument must be of type function');
      g.queueMicrotask(bindCurrent(() => cb(...args)));
    },
    emitWarning: (warning) => { g.console.warn(`Warning: ${warning instanceof Error ? warning.message : String(warning)}`); },
    // An isolate serves many requests: a worker cannot end it. Thrown, so the request that
    // called it fails (as code after exit() must not run) and the isolate lives on.
    exit: (code) => { throw Object.assign(new Error(`process.exit(${code ?? ''}) is not supported in a worker`), { code: 'ERR_METHOD_NOT_IMPLEMENTED' }); },
    abort: () => { throw Object.assign(new Error('process.abort() is not supported in a worker'), { code: 'ERR_METHOD_NOT_IMPLEMENTED' }); },
    kill: () => { throw Object.assign(new Error('process.kill() is not supported in a worker'), { code: 'ERR_METHOD_NOT_IMPLEMENTED' }); },
    getBuiltinModule: (id) => modules[String(id).replace(/^node:/, '')],
  });
  return proc;
}

let modules = null;

function install(envText, digest) {
  if (modules) return;
  installPropagation(g);
  const Buffer = require('buffer').Buffer;
  const process = makeProcess(envText ?? {});
  // The globals Workers adds with nodejs_compat.
  for (const [name, value] of [['Buffer', Buffer], ['process', process], ['global', g]]) {
    Object.defineProperty(g, name, { value, writable: true, enumerable: false, configurable: true });
  }
  const path = () => { const p = require('path-browserify'); return p.posix ?? p; };
  const util = () => ({ ...require('util'), TextEncoder: g.TextEncoder, TextDecoder: g.TextDecoder });
  const factories = {
    buffer: () => require('buffer'),
    events: () => require('events'),
    async_hooks: () => ({ AsyncLocalStorage, AsyncResource, executionAsyncId, triggerAsyncId, createHook }),
    util,
    'util/types': () => modules.util.types,
    process: () => process,
    crypto: () => makeCrypto((alg, data) => digest(alg, data)),
    stream: () => require('readable-stream'),
    'stream/promises': () => require('readable-stream').promises,
    diagnostics_channel: () => diagnosticsChannel,
    os: () => os,
    string_decoder: () => require('string_decoder'),
    path,
    'path/posix': path,
    url: () => ({ ...require('url'), URL: g.URL, URLSearchParams: g.URLSearchParams }),
  };
  modules = {};
  for (const [name, make] of Object.entries(factories)) {
    let value;
    Object.defineProperty(modules, name, { get: () => (value ??= make()), enumerable: true });
  }
  Object.defineProperty(g, '__edgeNodeModules', { value: modules, writable: false, enumerable: false, configurable: true });
}

Object.defineProperty(g, '__edgeNodeInstall', { value: install, writable: false, enumerable: false, configurable: true });
