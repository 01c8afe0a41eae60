import { describe, expect, it } from 'vitest';
import { HtmlRewriterModuleError, htmlRewriterModule } from '../../node-agent/isolate/html-rewriter.js';

// The host's half of HTMLRewriter (node-agent/isolate/html-rewriter.ts): lol-html's module
// compiled once per memory maximum, with that maximum written into its memory section, so
// the memory an isolate instantiates can never grow past its share of the worker's budget.

const WA = (globalThis as unknown as { WebAssembly: {
  Module: { imports(m: object): { module: string; name: string; kind: string }[] };
  Instance: new (m: object, imports: object) => { exports: Record<string, unknown> };
} }).WebAssembly;

function instantiate(module: object): { buffer: ArrayBuffer; grow(pages: number): number } {
  // Every import a throwing stub: instantiation runs no start function that calls them.
  const imports: Record<string, Record<string, () => never>> = {};
  for (const i of WA.Module.imports(module)) (imports[i.module] ??= {})[i.name] = () => { throw new Error(`import ${i.name} called`); };
  return new WA.Instance(module, imports).exports.memory as { buffer: ArrayBuffer; grow(pages: number): number };
}

describe('HTMLRewriter module on the host', () => {
  it('gives the memory the asked maximum: it grows to it and no further', () => {
    const memory = instantiate(htmlRewriterModule(64, 2048));
    const initial = memory.buffer.byteLength / 65536;
    expect(initial).toBeLessThan(64);
    memory.grow(64 - initial);
    expect(memory.buffer.byteLength).toBe(64 * 65536);
    expect(() => memory.grow(1)).toThrow(RangeError);
  });

  it('compiles once per maximum', () => {
    expect(htmlRewriterModule(64, 2048)).toBe(htmlRewriterModule(64, 2048));
    expect(htmlRewriterModule(128, 2048)).not.toBe(htmlRewriterModule(64, 2048));
  });

  it('refuses a maximum outside the worker\'s budget (what a tampered shim would ask for)', () => {
    expect(() => htmlRewriterModule(2049, 2048)).toThrow(HtmlRewriterModuleError);
    expect(() => htmlRewriterModule(0, 2048)).toThrow(HtmlRewriterModuleError);
    expect(() => htmlRewriterModule(1.5, 2048)).toThrow(HtmlRewriterModuleError);
  });
});
