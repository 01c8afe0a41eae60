import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ActorLogUnavailableError } from '../../common/actor-log.js';
import { FencedError } from '../../common/actor-ops.js';
import { EdgeError } from '../../common/errors.js';
import { ActorStorageFullError } from '../../node-agent/bindings/actor-storage.js';
import { BundleError, WorkerLimitError } from '../../node-agent/isolate/worker-isolate.js';
import { SocketLimitError } from '../../node-agent/sockets/isolate-sockets.js';
import { KubeError } from '../../operator/runtime/kube-client.js';

class Outer extends EdgeError {}
class Inner extends Outer {
  constructor(readonly code: number, message: string, options?: ErrorOptions) { super(message, options); }
}

const ADDR = { namespace: 'default', actor: 'counters', id: 'a'.repeat(64) };
const LIMITS = { cpuMsPerRequest: 50, wallMsPerRequest: 1000, memoryMiB: 128, subrequests: 50 };

describe('EdgeError', () => {
  it('names itself after the class that was thrown, through subclasses of subclasses', () => {
    const e = new Inner(7, 'boom');
    expect(e.name).toBe('Inner');
    expect(new Outer('x').name).toBe('Outer');
    expect(new EdgeError('x').name).toBe('EdgeError');
    expect(String(e)).toBe('Inner: boom');
    expect(e.stack?.split('\n', 1)[0]).toBe('Inner: boom');
    expect(e).toBeInstanceOf(Inner);
    expect(e).toBeInstanceOf(Outer);
    expect(e).toBeInstanceOf(EdgeError);
    expect(e).toBeInstanceOf(Error);
    expect(new Outer('x')).not.toBeInstanceOf(Inner);
    expect(e.code).toBe(7);
    // As on Error.prototype: the error's own enumerable fields are its data.
    expect(Object.keys(e)).toEqual(['code']);
  });

  it('keeps the error it wraps as cause, and has none when given none', () => {
    const root = new TypeError('bad input');
    const e = new Inner(1, 'wrapped', { cause: root });
    expect(e.cause).toBe(root);
    expect('cause' in new Inner(1, 'alone')).toBe(false);
    // A cause that is not an Error is kept as it was thrown.
    expect(new Outer('x', { cause: 'a string' }).cause).toBe('a string');
  });

  it('carries structured context, and none unless given', () => {
    const e = new EdgeError('x', { context: { worker: 'default/w', region: 'eu-west' }, cause: 1 });
    expect(e.context).toEqual({ worker: 'default/w', region: 'eu-west' });
    expect(e.cause).toBe(1);
    expect(new EdgeError('x').context).toBeUndefined();
  });

  it('the project’s error classes keep their messages and fields, and gain name, cause and context', () => {
    const nats = new Error('TIMEOUT');
    const u = new ActorLogUnavailableError(ADDR, 'commit', true, nats);
    expect(u.message).toBe(`actor default/counters/${'a'.repeat(64)}: commit failed: NATS JetStream unavailable (TIMEOUT); the write may or may not have been stored`);
    expect(u.name).toBe('ActorLogUnavailableError');
    expect(u.cause).toBe(nats);
    expect(u.context).toEqual({ actor: `default/counters/${'a'.repeat(64)}` });

    const l = new WorkerLimitError('default/w', 'cpu', LIMITS);
    expect(l.message).toBe('worker default/w exceeded its CPU limit (50 ms per request)');
    expect(l.name).toBe('WorkerLimitError');
    expect(l.reason).toBe('cpu');
    expect(l.context).toEqual({ worker: 'default/w' });

    const compile = new SyntaxError('Unexpected end of input');
    const b = new BundleError('default/w', 'does not compile: Unexpected end of input', { cause: compile });
    expect(b.message).toBe('worker default/w: does not compile: Unexpected end of input');
    expect(b.cause).toBe(compile);

    expect(new FencedError(ADDR, 'fenced').context).toEqual({ actor: `default/counters/${'a'.repeat(64)}` });
    expect(new KubeError(409, 'Conflict', 'PATCH /x: 409').name).toBe('KubeError');
  });

  it('limit errors are EdgeErrors; the host callbacks turn them into the RangeError a worker sees', () => {
    // Not RangeError subclasses (isolated-vm would not pass them on as RangeErrors anyway):
    // shim/durable.test.ts and shim/websocket.test.ts check the worker gets a RangeError.
    expect(new ActorStorageFullError('full')).toBeInstanceOf(EdgeError);
    expect(new SocketLimitError('big').name).toBe('SocketLimitError');
  });

  it('every error class outside the isolate derives from EdgeError', () => {
    const root = join(import.meta.dirname, '../..');
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const d of readdirSync(join(root, dir), { withFileTypes: true })) {
        const rel = join(dir, d.name);
        // The shim is JavaScript inside the isolate: it has its own error types.
        if (d.isDirectory()) { if (rel !== join('node-agent', 'shim')) walk(rel); continue; }
        if (!d.name.endsWith('.ts')) continue;
        const text = readFileSync(join(root, rel), 'utf8');
        for (const m of text.matchAll(/class\s+(\w+)\s+extends\s+(\w*Error)\b/g)) {
          if (m[2] === 'Error' || m[2] === 'RangeError' || m[2] === 'TypeError') {
            if (!(rel === join('common', 'errors.ts') && m[1] === 'EdgeError')) offenders.push(`${rel}: ${m[1]} extends ${m[2]}`);
          }
        }
      }
    };
    for (const dir of ['common', 'operator', 'node-agent', 'cli']) walk(dir);
    expect(offenders).toEqual([]);
  });
});
