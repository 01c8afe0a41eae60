import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send } from './agent-harness.js';
import { connect, startActorAgent, type ActorAgent } from './actor-agent.js';

// examples/rooms.yaml does what its comment says: members see each other, the room is
// evicted while they are quiet, "ping" is answered by the agent without waking it, and the
// next message wakes it with the members' names (attachments) intact.

const HOST = 'rooms.localhost';

describe('examples/rooms.yaml (WebSocket hibernation)', () => {
  let h: ActorAgent;

  beforeAll(async () => {
    const worker = parseAllDocuments(readFileSync(join(REPO_ROOT, 'examples/rooms.yaml'), 'utf8'))[0]!.toJS() as { spec: { source: { inline: string } } };
    h = await startActorAgent();
    await h.publish({ namespace: 'default', name: 'rooms', host: HOST, source: worker.spec.source.inline, actors: { ROOMS: { name: 'hibernating-rooms', className: 'Room' } } });
    await waitFor('the worker to be served', async () => (await send(h.port, HOST, '/who?room=lobby')).status === 200, 30_000);
  }, 60_000);

  afterAll(async () => { await h?.stop(); });

  it('broadcasts, hibernates, answers ping without waking, and wakes on a message', async () => {
    const a = await connect(h.port, HOST, '/ws?room=lobby&name=ada');
    expect(await a.next()).toBe('ada joined (1 here)');
    const b = await connect(h.port, HOST, '/ws?room=lobby&name=bob');
    expect(await a.next()).toBe('bob joined (2 here)');
    expect(await b.next()).toBe('bob joined (2 here)');
    await waitFor('the room to be evicted', async () => h.agent.actors().length === 0, 20_000);
    a.ws.send('ping');
    expect(await a.next()).toBe('pong');
    expect(h.agent.actors()).toHaveLength(0);
    a.ws.send('hi');
    expect(await b.next()).toBe('ada: hi');
    expect(await (await send(h.port, HOST, '/who?room=lobby')).json()).toEqual(['ada', 'bob']);
    a.ws.close(1000, 'bye');
    expect(await b.next()).toBe('ada left (1000 bye)');
    b.ws.close();
  }, 60_000);
});
