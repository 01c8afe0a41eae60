import { describe, expect, it } from 'vitest';
import { ActorFetchInitSchema, LoaderCodeSchema, ServiceCallInitSchema, parseActorFetchInit, parseLoaderCode, parseServiceCallInit } from '../../node-agent/abi/bridge.js';

// parseLoaderCode, parseServiceCallInit and parseActorFetchInit are LoaderCodeSchema's,
// ServiceCallInitSchema's and ActorFetchInitSchema's checks written out for the load(),
// internal-call and stub.fetch() paths (zod's parse was ~0.1-0.15 ms of
// each with cold caches). The schemas stay the definition: both must give the same verdict
// on every input, and the same data when they accept.

const valid = () => ({
  compatibilityDate: '2025-06-01',
  compatibilityFlags: ['nodejs_compat'],
  mainModule: 'm.js',
  modules: { 'm.js': ['js', 'export default {}'], 'w.wasm': ['wasm', new ArrayBuffer(8)], 'd.json': ['json', '{}'] },
  values: '{"a":1}',
  caps: { DB: 'DB' },
  refs: { cb: [3, true] },
  outbound: 'default',
  limits: { cpuMs: 10, memoryMiB: 64 },
});

type Input = Record<string, unknown>;
const without = (k: string): Input => { const v: Input = valid(); delete v[k]; return v; };
const withField = (k: string, value: unknown): Input => ({ ...valid(), [k]: value });

const cases: [string, unknown][] = [
  ['valid', valid()],
  ['valid, minimal', { ...valid(), compatibilityFlags: [], modules: {}, caps: {}, refs: {}, limits: {} }],
  ['valid, unknown keys dropped', { ...valid(), extra: 1, limits: { cpuMs: 1, other: 'x' } }],
  ['not an object', 'code'],
  ['null', null],
  ['an array', []],
  ...['compatibilityDate', 'compatibilityFlags', 'mainModule', 'modules', 'values', 'caps', 'refs', 'outbound', 'limits'].map((k): [string, unknown] => [`no ${k}`, without(k)]),
  ['date too long', withField('compatibilityDate', 'x'.repeat(65))],
  ['date not a string', withField('compatibilityDate', 20250601)],
  ['flags not an array', withField('compatibilityFlags', 'nodejs_compat')],
  ['65 flags', withField('compatibilityFlags', Array.from({ length: 65 }, () => 'f'))],
  ['a flag too long', withField('compatibilityFlags', ['f'.repeat(129)])],
  ['a flag not a string', withField('compatibilityFlags', [1])],
  ['empty main module', withField('mainModule', '')],
  ['main module too long', withField('mainModule', 'm'.repeat(513))],
  ['modules an array', withField('modules', [['js', '']])],
  ['module of an unknown type', withField('modules', { 'm.js': ['python', ''] })],
  ['module without content', withField('modules', { 'm.js': ['js'] })],
  ['module with three parts', withField('modules', { 'm.js': ['js', '', ''] })],
  ['module content a number', withField('modules', { 'm.js': ['js', 5] })],
  ['module content a typed array', withField('modules', { 'm.js': ['data', new Uint8Array(2)] })],
  ['module not a tuple', withField('modules', { 'm.js': 'export default {}' })],
  ['values an object', withField('values', { a: 1 })],
  ['a cap not a string', withField('caps', { DB: 1 })],
  ['caps an array', withField('caps', ['DB'])],
  ['a ref id of 0', withField('refs', { cb: [0, true] })],
  ['a ref id fractional', withField('refs', { cb: [1.5, true] })],
  ['a ref id unsafe', withField('refs', { cb: [2 ** 60, true] })],
  ['a ref flag not boolean', withField('refs', { cb: [1, 'yes'] })],
  ['a ref with three parts', withField('refs', { cb: [1, true, 1] })],
  ['outbound too long', withField('outbound', 'o'.repeat(257))],
  ['outbound not a string', withField('outbound', null)],
  ['limits not an object', withField('limits', 5)],
  ['a limit of 0', withField('limits', { cpuMs: 0 })],
  ['a negative limit', withField('limits', { memoryMiB: -1 })],
  ['a limit not finite', withField('limits', { subRequests: Infinity })],
  ['a limit NaN', withField('limits', { cpuMs: NaN })],
  ['a limit a string', withField('limits', { cpuMs: '10' })],
];

describe('parseLoaderCode', () => {
  it.each(cases)('gives zod\'s verdict and data: %s', (_name, input) => {
    const mine = parseLoaderCode(input);
    const zod = LoaderCodeSchema.safeParse(input);
    expect(mine.ok).toBe(zod.success);
    if (mine.ok && zod.success) expect(mine.data).toEqual(zod.data);
  });

  it('names the field it refused', () => {
    const r = parseLoaderCode(withField('refs', { cb: [0, true] }));
    expect(r).toEqual({ ok: false, error: 'refs.cb: expected [an integer of 1 or more, a boolean]' });
    expect(parseLoaderCode(withField('limits', { cpuMs: -2 }))).toMatchObject({ ok: false, error: expect.stringMatching(/^limits\.cpuMs: /) });
  });
});

const call = () => ({ url: 'https://x.test/a?b=1', method: 'POST', headers: [['content-type', 'text/plain'], ['x-a', '1']], body: new ArrayBuffer(4) });
const callWith = (k: string, value: unknown): Input => ({ ...call(), [k]: value });
const callWithout = (k: string): Input => { const v: Input = call(); delete v[k]; return v; };
const callCases: [string, unknown][] = [
  ['valid', call()],
  ['valid, no body', callWith('body', null)],
  ['valid, no headers', callWith('headers', [])],
  ['valid, unknown keys dropped', { ...call(), extra: true }],
  ['not an object', 42],
  ['an array', [call()]],
  ...['url', 'method', 'headers', 'body'].map((k): [string, unknown] => [`no ${k}`, callWithout(k)]),
  ['url too long', callWith('url', 'u'.repeat(64 * 1024 + 1))],
  ['url at the limit', callWith('url', 'u'.repeat(64 * 1024))],
  ['empty method', callWith('method', '')],
  ['method too long', callWith('method', 'M'.repeat(65))],
  ['headers not an array', callWith('headers', { a: 'b' })],
  ['a header of one part', callWith('headers', [['a']])],
  ['a header of three parts', callWith('headers', [['a', 'b', 'c']])],
  ['a header value a number', callWith('headers', [['a', 1]])],
  ['a header an object', callWith('headers', [{ 0: 'a', 1: 'b' }])],
  ['body a string', callWith('body', 'text')],
  ['body a typed array', callWith('body', new Uint8Array(2))],
  ['body over 32 MiB', callWith('body', new ArrayBuffer(32 * 1024 * 1024 + 1))],
];

/** Each case: the written-out parser gives the schema's verdict, and the same data when both accept. */
function sameAsZod(cases: [string, unknown][], mine: (raw: unknown) => unknown, schema: { safeParse(raw: unknown): { success: boolean; data?: unknown } }): void {
  it.each(cases)('gives zod\'s verdict and data: %s', (_name, input) => {
    const parsed = mine(input);
    const zod = schema.safeParse(input);
    expect(parsed !== null).toBe(zod.success);
    if (parsed !== null && zod.success) expect(parsed).toEqual(zod.data);
  });
}

describe('parseServiceCallInit', () => {
  sameAsZod(callCases, parseServiceCallInit, ServiceCallInitSchema);
});

const actorCall = () => ({ id: 7, ...call() });
const actorWith = (k: string, value: unknown): Input => ({ ...actorCall(), [k]: value });
const actorCases: [string, unknown][] = [
  // Every service-call case, with an id: the head and whole-body rules are the same.
  ...callCases.map(([name, input]): [string, unknown] => [`${name} (with an id)`, typeof input === 'object' && input !== null && !Array.isArray(input) ? { id: 7, ...input } : input]),
  ['body streamed (1)', actorWith('body', 1)],
  ['body 2', actorWith('body', 2)],
  ['body true', actorWith('body', true)],
  ['no id', call()],
  ['id 0', actorWith('id', 0)],
  ['id negative', actorWith('id', -3)],
  ['id a fraction', actorWith('id', 1.5)],
  ['id a string', actorWith('id', '7')],
  ['id NaN', actorWith('id', Number.NaN)],
  ['id Infinity', actorWith('id', Number.POSITIVE_INFINITY)],
  ['id the largest safe integer', actorWith('id', Number.MAX_SAFE_INTEGER)],
  ['id past the safe integers', actorWith('id', Number.MAX_SAFE_INTEGER + 2)],
];

describe('parseActorFetchInit', () => {
  sameAsZod(actorCases, parseActorFetchInit, ActorFetchInitSchema);
});
