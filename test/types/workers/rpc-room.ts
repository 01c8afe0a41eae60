// The `cloudflare:workers` way to write a Durable Object (issue 14 item 1): compiled here
// against workers-types' module declaration; test/unit/workers-types.test.ts also tries to
// bundle it, and the list's 'cloudflare:workers' entry says whether that must work.
import { DurableObject, WorkerEntrypoint } from 'cloudflare:workers';

interface Env {
  ROOMS: DurableObjectNamespace<Room>;
}

export class Room extends DurableObject<Env> {
  async sayHello(name: string): Promise<string> {
    const seen = ((await this.ctx.storage.get<number>(`seen:${name}`)) ?? 0) + 1;
    await this.ctx.storage.put(`seen:${name}`, seen);
    return `hello ${name} (${seen})`;
  }
}

export class Greeter extends WorkerEntrypoint<Env> {
  async greet(name: string): Promise<string> {
    return this.env.ROOMS.getByName('lobby').sayHello(name);
  }
}

export default {
  async fetch(request, env): Promise<Response> {
    const stub = env.ROOMS.getByName(new URL(request.url).pathname.slice(1) || 'lobby');
    return new Response(await stub.sayHello('x'));
  },
} satisfies ExportedHandler<Env>;
