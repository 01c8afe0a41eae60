import { afterAll, describe, expect, it } from 'vitest';
import type ivm from 'isolated-vm';
import { warmIsolate, type WarmIsolate } from '../../../node-agent/isolate/pool.js';
import { libModule } from '../../../node-agent/isolate/libs.js';
import { SHIM_LIBS, libSource, shimSource, type ShimLib } from '../../../node-agent/isolate/shim-bundle.js';

// The shim's libraries (pako, sql.js, lol-html's glue) are not in the snapshot every isolate
// is made from (each isolate held their source and functions: ~240 KB of a cached dynamic
// worker's RSS); the shim gets each from the host at its first use and evaluates it there.

/** A string only each library's own code has. */
const MARKS: Record<ShimLib, string> = {
  'pako-deflate': 'deflateSetDictionary',
  'pako-inflate': 'incorrect header check',
  'sql-wasm': 'initSqlJsPromise',
  'html-rewriter': '__wbindgen',
};

describe('shim libraries outside the snapshot', () => {
  const isolates: WarmIsolate[] = [];
  afterAll(() => { for (const w of isolates) w.isolate.dispose(); });

  it('the snapshot source holds none of them; each library\'s script does', () => {
    const shim = shimSource();
    for (const name of Object.keys(SHIM_LIBS) as ShimLib[]) {
      expect(shim.includes(MARKS[name]), name).toBe(false);
      expect(libSource(name).includes(MARKS[name]), name).toBe(true);
    }
  });

  it('a library given to an isolate is evaluated there, by the function it is handed', async () => {
    const warm = warmIsolate(32);
    isolates.push(warm);
    const fn = warm.context.evalSync(`(function (lib) {
      const module = { exports: {} };
      lib(module, module.exports, () => { throw new Error('no require'); }, '');
      const d = new module.exports.Deflate({ gzip: true });
      d.push(new Uint8Array([1, 2, 3, 1, 2, 3]), true);
      return d.result[0] === 0x1f && d.result[1] === 0x8b;
    })`, { reference: true }) as ivm.Reference<(lib: unknown) => boolean>;
    expect(await fn.apply(undefined, [libModule(warm, 'pako-deflate')])).toBe(true);
    // A second isolate gets it from the code cache the first compile made.
    const other = warmIsolate(32);
    isolates.push(other);
    const typeOf = other.context.evalSync('(function (lib) { return typeof lib; })', { reference: true }) as ivm.Reference<(lib: unknown) => string>;
    expect(await typeOf.apply(undefined, [libModule(other, 'pako-deflate')])).toBe('function');
  });

  it('only the listed libraries are given', () => {
    const warm = warmIsolate(32);
    isolates.push(warm);
    expect(() => libModule(warm, 'fs')).toThrow(TypeError);
    expect(() => libModule(warm, 'constructor')).toThrow(TypeError);
  });
});
