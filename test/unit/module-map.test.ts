import { describe, expect, it } from 'vitest';
import { decodeModuleMap, encodeModuleMap, jsonDepth, MODULE_MAP_HEADER, ModuleMapError, moduleTypeOf, resolveModuleName } from '../../common/module-map.js';

describe('resolveModuleName', () => {
  it('resolves ./ and ../ against the importer\'s directory', () => {
    expect(resolveModuleName('src/index.js', './lib/x.js')).toBe('src/lib/x.js');
    expect(resolveModuleName('src/lib/x.js', '../util/y.js')).toBe('src/util/y.js');
    expect(resolveModuleName('src/lib/x.js', './../../a.json')).toBe('a.json');
    expect(resolveModuleName('index.js', './a//b/./c.js')).toBe('a/b/c.js');
  });
  it('looks bare and absolute names up from the root', () => {
    expect(resolveModuleName('src/lib/x.js', 'lib/x.js')).toBe('lib/x.js');
    expect(resolveModuleName('src/lib/x.js', '/assets/p.html')).toBe('assets/p.html');
  });
  it('is null for a name climbing out of the root, or naming the root itself', () => {
    expect(resolveModuleName('index.js', '../etc/passwd')).toBeNull();
    expect(resolveModuleName('src/a.js', '../../x.js')).toBeNull();
    expect(resolveModuleName('src/a.js', '/../x.js')).toBeNull();
    expect(resolveModuleName('a.js', './')).toBeNull();
  });
});

describe('decodeModuleMap', () => {
  const map = { mainModule: 'index.js', modules: { 'index.js': { js: 'export default {}' }, 'a.txt': { text: 'hi' }, 'b.json': { json: { k: [1] } } } };
  it('round-trips encodeModuleMap, and is null for a plain ES module', () => {
    const source = encodeModuleMap(map);
    expect(source.startsWith(MODULE_MAP_HEADER)).toBe(true);
    expect(decodeModuleMap(source)).toEqual(map);
    expect(decodeModuleMap('export default { fetch() {} };')).toBeNull();
    expect(moduleTypeOf({ wasm: 'AA==' })).toBe('wasm');
  });
  it('refuses malformed maps, naming the field', () => {
    const bad = (m: unknown) => () => decodeModuleMap(MODULE_MAP_HEADER + JSON.stringify(m));
    expect(() => decodeModuleMap(`${MODULE_MAP_HEADER}{not json`)).toThrow(ModuleMapError);
    expect(bad({ mainModule: 'x.js', modules: {} })).toThrow('mainModule "x.js" is not in modules');
    expect(bad({ mainModule: 'a.txt', modules: { 'a.txt': { text: '' } } })).toThrow('must be a js or cjs module');
    expect(bad({ mainModule: 'i.js', modules: { 'i.js': { js: '' }, '../x.js': { js: '' } } })).toThrow('a module name is a relative path');
    expect(bad({ mainModule: 'i.js', modules: { 'i.js': { js: '', text: '' } } })).toThrow('modules.i.js: a module is exactly one of');
    expect(() => encodeModuleMap({ mainModule: '/abs.js', modules: { '/abs.js': { js: '' } } })).toThrow(ModuleMapError);
  });
});

describe('decodeModuleMap on hostile input', () => {
  it('refuses a deeply nested json module before parsing it (JSON.parse of deep nesting is slow on the caller\'s thread)', () => {
    const d = 300_000;
    const src = `${MODULE_MAP_HEADER}{"mainModule":"i.js","modules":{"i.js":{"js":"[[[\\"{"},"j.json":{"json":${'['.repeat(d)}${']'.repeat(d)}}}}`;
    expect(() => decodeModuleMap(src)).toThrow(`the module map nests ${d + 3} levels deep; at most 1000`);
    // Brackets inside strings do not count.
    expect(jsonDepth('{"a":"[[[[\\"{{{{","b":[1]}')).toBe(2);
  });
});
