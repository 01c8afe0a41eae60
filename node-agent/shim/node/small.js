// Small Node modules workers' dependencies import without needing what they describe:
// node:diagnostics_channel (the Agents SDK publishes its telemetry on channels) and node:os
// (values of a machine that is not there, as Workers' nodejs_compat gives).

class Channel {
  #subscribers = [];
  constructor(name) { this.name = name; }
  get hasSubscribers() { return this.#subscribers.length > 0; }
  subscribe(fn) { if (typeof fn !== 'function') throw new TypeError('The "subscription" argument must be of type function'); this.#subscribers.push(fn); }
  unsubscribe(fn) { const i = this.#subscribers.indexOf(fn); if (i < 0) return false; this.#subscribers.splice(i, 1); return true; }
  publish(message) {
    for (const fn of this.#subscribers.slice()) {
      // As in Node: a subscriber's throw is reported, never thrown into the publisher.
      try { fn(message, this.name); } catch (err) { globalThis.queueMicrotask(() => { throw err; }); }
    }
  }
  bindStore() {}
  unbindStore() { return false; }
  runStores(_data, fn, thisArg, ...args) { return Reflect.apply(fn, thisArg, args); }
}

const channels = new Map();
function channel(name) {
  let c = channels.get(name);
  if (!c) { c = new Channel(name); channels.set(name, c); }
  return c;
}

function tracingChannel(nameOrChannels) {
  const ch = typeof nameOrChannels === 'string'
    ? Object.fromEntries(['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((k) => [k, channel(`tracing:${nameOrChannels}:${k}`)]))
    : nameOrChannels;
  return {
    ...ch,
    get hasSubscribers() { return Object.values(ch).some((c) => c.hasSubscribers); },
    subscribe(handlers) { for (const [k, fn] of Object.entries(handlers)) ch[k]?.subscribe(fn); },
    unsubscribe(handlers) { let all = true; for (const [k, fn] of Object.entries(handlers)) all = (ch[k]?.unsubscribe(fn) ?? false) && all; return all; },
    traceSync(fn, context = {}, thisArg, ...args) {
      ch.start.publish(context);
      try { context.result = Reflect.apply(fn, thisArg, args); return context.result; } catch (err) { context.error = err; ch.error.publish(context); throw err; } finally { ch.end.publish(context); }
    },
    tracePromise(fn, context = {}, thisArg, ...args) {
      ch.start.publish(context);
      try {
        return Promise.resolve(Reflect.apply(fn, thisArg, args)).then(
          (result) => { context.result = result; ch.asyncStart.publish(context); ch.asyncEnd.publish(context); return result; },
          (err) => { context.error = err; ch.error.publish(context); ch.asyncStart.publish(context); ch.asyncEnd.publish(context); throw err; });
      } catch (err) { context.error = err; ch.error.publish(context); throw err; } finally { ch.end.publish(context); }
    },
    // The callback's own completion is not traced (no asyncStart/asyncEnd): start, end, error.
    traceCallback(fn, _position, context = {}, thisArg, ...args) {
      return this.traceSync(fn, context, thisArg, ...args);
    },
  };
}

export const diagnosticsChannel = {
  channel, tracingChannel, Channel,
  hasSubscribers: (name) => channels.get(name)?.hasSubscribers ?? false,
  subscribe: (name, fn) => channel(name).subscribe(fn),
  unsubscribe: (name, fn) => channel(name).unsubscribe(fn),
};

export const os = {
  EOL: '\n',
  devNull: '/dev/null',
  platform: () => 'linux', type: () => 'Linux', arch: () => 'x64', machine: () => 'x86_64', release: () => '', version: () => '',
  endianness: () => 'LE', hostname: () => 'localhost', homedir: () => '/', tmpdir: () => '/tmp',
  cpus: () => [], availableParallelism: () => 1, totalmem: () => 0, freemem: () => 0, loadavg: () => [0, 0, 0], uptime: () => 0,
  networkInterfaces: () => ({}), userInfo: () => ({ uid: -1, gid: -1, username: '', homedir: '/', shell: null }),
  getPriority: () => 0, setPriority: () => undefined,
  constants: { signals: {}, errno: {}, priority: {} },
};
