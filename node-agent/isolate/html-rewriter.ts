import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// HTMLRewriter's lol-html (html-rewriter-wasm, BSD-3-Clause) runs inside each isolate that
// uses it (shim/html-rewriter.js); the host only hands over the module's bytes, read once
// per process. Each isolate compiles them itself, through its own counting
// WebAssembly.Module (shim/web/wasm.js), so the memory's maximum is that worker's: about
// 2 ms with V8's lazy compilation (docs/runtime-globals.md has the figures).

let bytes: Buffer | undefined;

/** A fresh copy of lol-html's wasm bytes (isolated-vm copies it into the isolate). */
export function htmlRewriterWasm(): ArrayBuffer {
  bytes ??= readFileSync(createRequire(import.meta.url).resolve('html-rewriter-wasm/dist/html_rewriter_bg.wasm'));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
