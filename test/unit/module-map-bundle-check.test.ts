import { afterAll, describe, expect, it } from 'vitest';
import { encodeModuleMap, MODULE_MAP_HEADER, type ModuleMap } from '../../common/module-map.js';
import { checkBundle, disposeBundleChecker } from '../../operator/controllers/bundle-check.js';

// The operator's bundle check on module maps: it compiles every ES and CommonJS module,
// resolves every static import inside the map, validates wasm, and names what is wrong.

afterAll(() => disposeBundleChecker());

const WASM = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).toString('base64');
const map = (modules: ModuleMap['modules'], mainModule = 'src/index.js'): string => encodeModuleMap({ mainModule, modules });
let n = 0;
const check = (source: string, flags: string[] = []) => checkBundle(`sha256:mm${n++}`, source, 'w.js', flags);

describe('bundle check of a module map', () => {
  it('accepts a map whose imports resolve inside it', async () => {
    expect(await check(map({
      'src/index.js': { js: 'import a from "./lib/a.js";\nimport t from "../t.txt";\nimport w from "../w.wasm";\nimport { DurableObject } from "cloudflare:workers";\nimport c from "./c.cjs";\nexport default { fetch() {} };' },
      'src/lib/a.js': { js: 'import j from "../../j.json";\nexport default j;' },
      'src/c.cjs': { cjs: 'module.exports = require("./lib/a.js");\nreturn;' },
      't.txt': { text: 'x' }, 'j.json': { json: [1] }, 'w.wasm': { wasm: WASM },
    }))).toBeUndefined();
  });
  it('names the module and specifier of an import that climbs out, is missing, or is a Node built-in without the flag', async () => {
    expect(await check(map({ 'src/index.js': { js: 'import "../../x.js";' } }))).toBe('module "src/index.js" imports "../../x.js", which climbs out of the worker\'s root');
    expect(await check(map({ 'src/index.js': { js: 'import "./lib/gone.js";' } }))).toBe('No such module "src/lib/gone.js" (imported from "src/index.js" as "./lib/gone.js")');
    expect(await check(map({ 'src/index.js': { js: 'import "node:buffer";' } }))).toContain('needs the nodejs_compat compatibility flag');
    expect(await check(map({ 'src/index.js': { js: 'import "node:buffer";' } }), ['nodejs_compat'])).toBeUndefined();
  });
  it('names the module that does not compile, ES or CommonJS, and wasm that does not validate', async () => {
    expect(await check(map({ 'src/index.js': { js: 'import "./b.js";' }, 'src/b.js': { js: 'export default {' } }))).toMatch(/^module "src\/b.js" does not compile: ./);
    expect(await check(map({ 'src/index.js': { js: '' }, 'c.cjs': { cjs: 'module.exports = ;' } }))).toMatch(/^module "c.cjs" does not compile: ./);
    expect(await check(map({ 'src/index.js': { js: '' }, 'w.wasm': { wasm: Buffer.from('not wasm').toString('base64') } }))).toBe('module "w.wasm" is not a valid WebAssembly module');
  });
  it('reports a malformed map, naming the field', async () => {
    expect(await check(`${MODULE_MAP_HEADER}{"mainModule":"a.js"`)).toContain('the module map is not JSON');
    expect(await check(`${MODULE_MAP_HEADER}{"mainModule":"a.js","modules":{"a.js":{"js":""},"d.bin":{"data":"@@"}}}`)).toBe("the module map is invalid: modules.d.bin.data: not base64");
  });
});
