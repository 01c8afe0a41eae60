// `ai` bindings: env.<name> is a frozen object with run(model, inputs, options?), shaped
// like Cloudflare Workers AI: the model's task (the cluster catalogue's) decides the
// inputs and the answer: text generation (below), text embeddings ({ text } -> { shape,
// data }) and text to image ({ prompt } -> a ReadableStream of the PNG's bytes). The
// isolate knows a binding by its name only; the host (node-agent/ai-binding.ts) holds the model server's address,
// makes the call, counts it against limits.subrequests and translates both ways.
//
//   await env.AI.run('llama-3.1-8b', { messages: [{ role: 'user', content: 'hi' }] })
//     -> { response: '...', usage: { prompt_tokens, completion_tokens, total_tokens } }
//   await env.AI.run('llama-3.1-8b', { prompt: 'hi', stream: true })
//     -> ReadableStream of bytes: `data: {"response":"<token>"}\n\n` per token, then
//        `data: {"response":"","usage":{...}}\n\n` (when the server reports usage) and
//        `data: [DONE]\n\n`. Bytes arrive as the server sends its tokens; cancelling the
//        stream aborts the server's request.
//
// Runs at snapshot time: nothing here calls a host callback until run() is called.
import { host } from './host.js';
import { hostOutcome, messageOf } from './web/util.js';
import { hostPulledStream, ReadableStream } from './web/streams.js';

const stringify = JSON.stringify;
const freeze = Object.freeze;
const isArray = Array.isArray;
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const Uint8ArrayCtor = Uint8Array;


/** The streamed answer: pulls translated bytes from the host one chunk at a time. */
function answerStream(handle) {
  return hostPulledStream(() => host.aiRead(handle), (err) => new ErrorCtor(messageOf(err)), () => host.aiCancel(handle));
}

function oneChunkStream(bytes) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
}

/** env.<name> for an ai binding: run(model, inputs) with any model the binding may call. */
export function aiBinding(name) {
  const what = `env.${name}.run()`;
  async function run(requested, inputs, options = undefined) {
    if (typeof requested !== 'string') throw new TypeErrorCtor(`${what}: the first argument must be the model name (a string)`);
    // Which models the binding may call, and their tasks, the host decides (the catalogue's).
    if (inputs === null || typeof inputs !== 'object' || isArray(inputs)) {
      throw new TypeErrorCtor(`${what}: inputs must be an object such as { messages: [{ role: 'user', content: '...' }] } or { prompt: '...' }`);
    }
    // options (gateway, returnRawResponse, ...) have no meaning here and are ignored.
    if (options !== undefined && options !== null && typeof options !== 'object') {
      throw new TypeErrorCtor(`${what}: options must be an object`);
    }
    let json;
    try {
      json = stringify(inputs);
    } catch (err) {
      throw new TypeErrorCtor(`${what}: inputs cannot be serialized as JSON: ${messageOf(err)}`);
    }
    const answer = await hostOutcome(host.aiRun(name, requested, json));
    if (answer.kind === 'stream') return answerStream(answer.handle);
    if (answer.kind === 'embeddings') return { shape: answer.shape, data: answer.data };
    // Workers AI answers text-to-image with a ReadableStream of the image's bytes (a PNG).
    if (answer.kind === 'image') return oneChunkStream(new Uint8ArrayCtor(answer.body));
    const out = { response: answer.response };
    if (answer.usage !== undefined) out.usage = answer.usage;
    if (answer.tool_calls !== undefined) out.tool_calls = answer.tool_calls;
    return out;
  }
  return freeze({ run });
}
