// TextEncoderStream and TextDecoderStream: the encoders wrapped in TransformStreams.
import { TextDecoder, utf8Encode } from './encoding.js';
import { TransformStream } from './streams.js';

export class TextEncoderStream {
  #ts;

  constructor() {
    // A surrogate pair split across two chunks must still encode as one code point.
    let pending = '';
    this.#ts = new TransformStream({
      transform(chunk, controller) {
        let s = pending + String(chunk);
        pending = '';
        const last = s.charCodeAt(s.length - 1);
        if (last >= 0xd800 && last <= 0xdbff) {
          pending = s[s.length - 1];
          s = s.slice(0, -1);
        }
        if (s) controller.enqueue(utf8Encode(s));
      },
      flush(controller) {
        if (pending) controller.enqueue(utf8Encode(pending));
      },
    });
  }

  get encoding() { return 'utf-8'; }
  get readable() { return this.#ts.readable; }
  get writable() { return this.#ts.writable; }
}

export class TextDecoderStream {
  #ts;
  #decoder;

  constructor(label = 'utf-8', options = undefined) {
    const decoder = new TextDecoder(label, options);
    this.#decoder = decoder;
    this.#ts = new TransformStream({
      transform(chunk, controller) {
        const s = decoder.decode(chunk, { stream: true });
        if (s) controller.enqueue(s);
      },
      flush(controller) {
        const s = decoder.decode();
        if (s) controller.enqueue(s);
      },
    });
  }

  get encoding() { return this.#decoder.encoding; }
  get fatal() { return this.#decoder.fatal; }
  get ignoreBOM() { return this.#decoder.ignoreBOM; }
  get readable() { return this.#ts.readable; }
  get writable() { return this.#ts.writable; }
}
