import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { EdgeError } from '../../common/errors.js';

// HTMLRewriter's lol-html (html-rewriter-wasm, BSD-3-Clause) runs inside each isolate that
// uses it (shim/html-rewriter.js). The host compiles its wasm once per process (per memory
// cap) and hands the compiled module over; isolated-vm transfers a WebAssembly.Module as
// V8's shared native module, so every isolate runs the same compiled code instead of
// compiling (and lazily compiling each function) again: a first use measured 30-120 ms
// compiling in the isolate, a few ms with the module handed in (docs/runtime-globals.md).
// The module's memory is given the maximum the isolate asks for (its share of the worker's
// memoryMiB, shim/web/wasm.js counts it), written into the module's memory section.

export class HtmlRewriterModuleError extends EdgeError {}

/** A compiled WebAssembly.Module (this tsconfig has no WebAssembly value types). */
export type CompiledModule = object;
const WasmModule = (globalThis as unknown as { WebAssembly: { Module: new (bytes: Uint8Array) => CompiledModule } }).WebAssembly.Module;

let bytes: Buffer | undefined;
/** Compiled modules by memory maximum (pages): one per distinct worker memory limit. */
const modules = new Map<number, CompiledModule>();

/** lol-html's module with its memory's maximum set to `maxPages`, compiled once per process. */
export function htmlRewriterModule(maxPages: number, budgetPages: number): CompiledModule {
  if (!Number.isInteger(maxPages) || maxPages < 1 || maxPages > budgetPages) {
    throw new HtmlRewriterModuleError(`HTMLRewriter: a memory maximum of ${String(maxPages)} pages is outside this worker's budget (${budgetPages} pages)`);
  }
  let module = modules.get(maxPages);
  if (!module) {
    bytes ??= readFileSync(createRequire(import.meta.url).resolve('html-rewriter-wasm/dist/html_rewriter_bg.wasm'));
    module = new WasmModule(withMemoryMaximum(bytes, maxPages));
    modules.set(maxPages, module);
  }
  return module;
}

function readLeb(b: Uint8Array, pos: number): { value: number; pos: number } {
  let value = 0;
  let scale = 1;
  for (let n = 0; n < 5; n++) {
    const byte = b[pos++];
    if (byte === undefined) break;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return { value, pos };
  }
  throw new HtmlRewriterModuleError('HTMLRewriter: malformed LEB128 in lol-html\'s module');
}

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    const low = n % 128;
    n = Math.floor(n / 128);
    out.push(n > 0 ? low | 0x80 : low);
  } while (n > 0);
  return out;
}

/** The module with each memory it defines given `maxPages` as its maximum (never below its initial size). */
export function withMemoryMaximum(wasm: Uint8Array, maxPages: number): Uint8Array {
  let pos = 8;
  while (pos < wasm.length) {
    const start = pos;
    const id = wasm[pos++]!;
    const size = readLeb(wasm, pos);
    const end = size.pos + size.value;
    if (id !== 5) { pos = end; continue; }
    const count = readLeb(wasm, size.pos);
    let p = count.pos;
    const body: number[] = [...leb(count.value)];
    for (let i = 0; i < count.value; i++) {
      const flags = wasm[p++]!;
      if (flags & ~1) throw new HtmlRewriterModuleError('HTMLRewriter: lol-html\'s module has a shared or 64-bit memory');
      const initial = readLeb(wasm, p);
      p = initial.pos;
      if (flags & 1) p = readLeb(wasm, p).pos;
      body.push(1, ...leb(initial.value), ...leb(Math.max(maxPages, initial.value)));
    }
    const section = [5, ...leb(body.length), ...body];
    const out = new Uint8Array(start + section.length + (wasm.length - end));
    out.set(wasm.subarray(0, start), 0);
    out.set(section, start);
    out.set(wasm.subarray(end), start + section.length);
    return out;
  }
  throw new HtmlRewriterModuleError('HTMLRewriter: lol-html\'s module defines no memory');
}
