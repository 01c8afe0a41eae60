// A guest book per room: each room is a Durable Object called by RPC, and names are looked
// up in the `users` worker through a service binding.
//   curl -X POST 'http://rpc.localhost:8787/lobby?user=ada'   -> {"room":"lobby","entries":[...]}
//   curl 'http://rpc.localhost:8787/lobby'
import { DurableObject, RpcTarget } from 'cloudflare:workers';

// Returned by reference: the caller's stub calls back into this room.
class Visit extends RpcTarget {
  constructor(room, entry) { super(); this.room = room; this.entry = entry; }
  async sign(message) {
    this.entry.message = message;
    await this.room.save();
    return this.entry;
  }
}

export class Room extends DurableObject {
  async entries() {
    return (await this.ctx.storage.get('entries')) ?? [];
  }

  // One call at a time per room (the input gate), and what it wrote is durable before
  // the caller sees the result (the output gate).
  async enter(user) {
    this.list = await this.entries();
    const entry = { name: user.name, at: new Date() };
    this.list.push(entry);
    await this.save();
    return new Visit(this, entry);
  }

  async save() { await this.ctx.storage.put('entries', this.list); }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const room = env.ROOMS.getByName(url.pathname.slice(1) || 'lobby');
    if (request.method === 'POST') {
      let user;
      try {
        user = await env.USERS.lookup(url.searchParams.get('user') ?? '');
      } catch (err) {
        return new Response(`${err.name}: ${err.message}\n`, { status: 404 });
      }
      // Pipelined: sign() is called on the Visit enter() returns, without awaiting it first.
      await room.enter(user).sign(url.searchParams.get('message') ?? 'hello');
    }
    return Response.json({ room: url.pathname.slice(1) || 'lobby', entries: await room.entries() });
  },
};
