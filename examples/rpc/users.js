// A service other workers of the namespace call by RPC (a service binding):
// `env.USERS.lookup("ada")` in the caller runs lookup() here, in this worker's own isolate.
import { WorkerEntrypoint } from 'cloudflare:workers';

const USERS = new Map([
  ['ada', { name: 'Ada Lovelace', since: new Date('1843-07-10') }],
  ['alan', { name: 'Alan Turing', since: new Date('1936-11-12') }],
]);

export default class Users extends WorkerEntrypoint {
  // Still a web service of its own: GET /ada.
  async fetch(request) {
    const user = USERS.get(new URL(request.url).pathname.slice(1));
    return user ? Response.json(user) : new Response('no such user\n', { status: 404 });
  }

  // Arguments and results are structured-cloned: the Date arrives as a Date.
  async lookup(id) {
    const user = USERS.get(id);
    if (!user) throw new RangeError(`no user ${id}`);
    return user;
  }
}
