import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatLogLine, printable, statusMatcher } from '../../cli/logs.js';
import { freePort, portHolder } from '../../cli/local/ports.js';
import { isTransientApiError, retryTransient } from '../../cli/local/retry.js';
import { codeFrame, findInlineWorker, mapInlinePositions } from '../../cli/yaml-source.js';
import { inlineSourceMap, originalPosition, parseSourceMap, workerStack } from '../../common/source-map.js';
import type { LogLine } from '../../common/nats.js';
import { KubeError } from '../../operator/runtime/kube-client.js';

// The small parts of issue 18's developer experience: source maps, YAML positions of an
// inline worker, edge logs' filters and lines, a port's holder, the apiserver's transient 429.

describe('source maps', () => {
  // "AAAA;AACA,IAAI" : line 1 col 0 -> a.ts 1:0; line 2 col 0 -> a.ts 2:0, col 4 -> a.ts 2:4
  const map = parseSourceMap(JSON.stringify({ version: 3, sources: ['a.ts'], names: [], mappings: 'AAAA;AACA,IAAI' }))!;

  it('decodes VLQ mappings and finds the segment at or before a column', () => {
    expect(originalPosition(map, 1, 1)).toEqual({ source: 'a.ts', line: 1, column: 1 });
    expect(originalPosition(map, 2, 3)).toEqual({ source: 'a.ts', line: 2, column: 1 });
    expect(originalPosition(map, 2, 9)).toEqual({ source: 'a.ts', line: 2, column: 5 });
    expect(originalPosition(map, 7, 1)).toBeUndefined();
  });

  it('refuses what is not a v3 map, and garbage VLQ, without throwing', () => {
    expect(parseSourceMap('not json')).toBeUndefined();
    expect(parseSourceMap(JSON.stringify({ version: 2, sources: [], mappings: '' }))).toBeUndefined();
    expect(parseSourceMap(JSON.stringify({ version: 3, sources: ['a'], mappings: 'A!!' }))).toBeUndefined();
    const truncated = parseSourceMap(JSON.stringify({ version: 3, sources: ['a'], mappings: 'g' }));
    expect(truncated && originalPosition(truncated, 1, 1)).toBeUndefined();
    expect(inlineSourceMap('export default {};\n//# sourceMappingURL=data:application/json;base64,bm90IGpzb24=\n')).toBeUndefined();
    expect(inlineSourceMap('export default {};\n')).toBeUndefined();
  });

  it('keeps a worker\'s own frames, drops the runtime\'s, and maps only the bundle\'s file', () => {
    const text = 'TypeError: x\n  second line\n    at f (worker:default/w.js:2:5)\n    at dispatch2 (edge-shim.js:22:1885)\n    at edge-shim.js:22:5500\n    at g (other.js:1:1)\n    at (<isolated-vm boundary>)';
    expect(workerStack(text, 'worker:default/w.js', map)).toEqual({ message: 'TypeError: x\n  second line', stack: '    at f (a.ts:2:5)\n    at g (other.js:1:1)' });
    expect(workerStack('just a message')).toEqual({ message: 'just a message', stack: '' });
  });
});

describe('inline workers in YAML', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-yaml-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a.yaml'), [
    'apiVersion: v1', 'kind: ConfigMap', 'metadata:', '  name: w', '---',
    'apiVersion: edge.isolates.dev/v1alpha1', 'kind: EdgeWorker', 'metadata:', '  name: w', '  namespace: team', 'spec:', '  source:',
    '    inline: |', '      export default {', '        fetch() { throw new Error("x"); },', '      };', '',
  ].join('\n'));
  writeFileSync(join(dir, 'b.yaml'), 'kind: EdgeWorker\nmetadata: { name: q }\nspec:\n  source:\n    inline: "export default { fetch() { boom(); } };"\n');
  writeFileSync(join(dir, 'broken.yaml'), 'kind: EdgeWorker\nmetadata: { name: w\n');

  it('finds the manifest that declares a worker (not another kind or namespace of the same name) and maps positions to its lines', () => {
    expect(findInlineWorker(dir, 'default', 'w')).toBeUndefined();
    const m = mapInlinePositions('Error: x\n    at Object.fetch (worker:team/w.js:2:19)\n    at (worker:team/nope.js:1:1)', dir, dir);
    expect(m.text).toBe('Error: x\n    at Object.fetch (a.yaml:15:25)\n    at (worker:team/nope.js:1:1)');
    expect(m.frame).toContain('> 15 |         fetch() { throw new Error("x"); },');
    expect(m.frame!.split('\n')[3]).toBe(`     | ${' '.repeat(24)}^`);
  });

  it('maps a quoted one-line source to its line and column', () => {
    expect(mapInlinePositions('at fetch (worker:default/q.js:1:28)', dir, dir).text).toBe('at fetch (b.yaml:5:41)');
  });

  it('draws a code frame at the edges of a file', () => {
    expect(codeFrame(['a', 'b'], 1, 1)).toBe('> 1 | a\n    | ^\n  2 | b');
  });
});

describe('edge logs lines and filters', () => {
  const base: LogLine = { ts: 't', level: 'info', message: 'm', region: 'r', node: 'n', worker: 'default/w' };
  const req = (status: number): LogLine => ({ ...base, kind: 'request', method: 'GET', url: 'http://w/x', status, durationMs: 1.25, cpuMs: 0.5 });

  it('prints a request like wrangler tail and an exception with its stack and ray', () => {
    expect(formatLogLine(req(200))).toBe('t r/n GET http://w/x 200 1.3 ms cpu 0.5 ms');
    expect(formatLogLine({ ...base, kind: 'exception', level: 'error', message: 'Error: x', stack: '    at f (a.js:1:1)', ray: 'abc' }))
      .toBe('t r/n error Uncaught Error: x\n        at f (a.js:1:1)\n    (ray abc)');
  });

  it('a hostile worker cannot drive the terminal: escape sequences and other controls are shown, not obeyed', () => {
    expect(printable('a\u001b[2J\u001b]0;pwned\u0007b\r\n\tc\u2028')).toBe('a\\x1b[2J\\x1b]0;pwned\\x07b\\x0d\n\tc\\u2028');
    expect(formatLogLine({ ...base, message: 'x\u001b[1Afake line' })).toBe('t r/n info  x\\x1b[1Afake line');
    expect(formatLogLine({ ...base, kind: 'exception', message: 'E\u001b[0m', stack: '    at \u009bf (a.js:1:1)' })).not.toMatch(/\p{Cc}(?<![\n\t])/u);
  });

  it('--status: ok, error, exact and classes; exceptions only with error; console lines never', () => {
    const m = statusMatcher(['ok', '404'])!;
    expect([200, 302, 404, 500].map((s) => m(req(s)))).toEqual([true, true, true, false]);
    const e = statusMatcher(['error,4xx'])!;
    expect([200, 404, 429, 503].map((s) => e(req(s)))).toEqual([false, true, true, true]);
    expect(e({ ...base, kind: 'exception' })).toBe(true);
    expect(m({ ...base, kind: 'exception' })).toBe(false);
    expect(e(base)).toBe(false);
    expect(statusMatcher([])).toBeUndefined();
    expect(() => statusMatcher(['teapot'])).toThrow(/--status: "teapot"/);
  });
});

describe('a taken port', () => {
  it('is attributed to the process listening on it, from /proc', async () => {
    const port = await freePort();
    expect(portHolder(port)).toBeUndefined();
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      const h = portHolder(port)!;
      expect(h.pid).toBe(process.pid);
      expect(h.command).toContain('node');
    } finally {
      srv.close();
    }
  });
});

describe('a just-started apiserver', () => {
  it('its 429 "storage is (re)initializing" is retried with backoff; other errors are not', async () => {
    expect(isTransientApiError(new KubeError(429, 'TooManyRequests', 'GET /x: 429 storage is (re)initializing'))).toBe(true);
    expect(isTransientApiError('Error from server (TooManyRequests): storage is (re)initializing')).toBe(true);
    expect(isTransientApiError(new KubeError(404, 'NotFound', 'GET /x: 404'))).toBe(false);
    let calls = 0;
    const got = await retryTransient(async () => {
      calls++;
      if (calls < 3) throw new KubeError(429, 'TooManyRequests', 'storage is (re)initializing');
      return 'ok';
    }, { firstDelayMs: 1 });
    expect({ got, calls }).toEqual({ got: 'ok', calls: 3 });
    calls = 0;
    await expect(retryTransient(async () => { calls++; throw new KubeError(403, 'Forbidden', 'no'); }, { firstDelayMs: 1 })).rejects.toThrow('no');
    expect(calls).toBe(1);
    await expect(retryTransient(async () => { throw new KubeError(429, 'TooManyRequests', 'still'); }, { firstDelayMs: 5, totalMs: 30 })).rejects.toThrow('still');
  });
});
