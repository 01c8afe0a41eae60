import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleWorker } from '../../cli/deploy.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// Issue 15's acceptance, with public npm packages run unmodified: each worker is bundled from
// the registry's package the way `edge deploy` bundles it, served by a real agent, and
// driven by a real client (for MCP, the MCP SDK's own client over streamable HTTP).

async function bundled(fixture: string, compatibilityFlags: string[] = []): Promise<string> {
  const out = await bundleWorker(fileURLToPath(new URL(`fixtures/${fixture}`, import.meta.url)), { minify: true, compatibilityFlags });
  if ('errors' in out) throw new Error(out.errors);
  return out.code;
}

let agent: TestAgent;
beforeAll(async () => {
  agent = await startTestAgent([
    { name: 'hono', source: await bundled('hono-app.js') },
    // The MCP SDK brings zod and ajv: its top level is heavier than a hand-written worker's.
    { name: 'email', source: await bundled('email-message.js') },
    { name: 'mcp', host: '127.0.0.1', source: await bundled('mcp-server.js'), limits: { cpuMsPerRequest: 1000, memoryMiB: 128, wallMsPerRequest: 10_000 } },
  ]);
}, 120_000);
afterAll(() => agent?.stop());

describe('a Hono app (hono on npm)', () => {
  const json = { 'content-type': 'application/json' };
  it('routes, runs its middleware and validates JSON', async () => {
    const list = await agent.get('hono.test', '/api/items?q=sen');
    expect(list.status).toBe(200);
    expect(list.headers.get('x-handled-by')).toBe('hono');
    expect(await list.json()).toEqual([{ id: '1', name: 'sencha', price: 4.5 }]);
    expect(await (await agent.get('hono.test', '/api/items/1')).json()).toMatchObject({ name: 'sencha' });
    expect((await agent.get('hono.test', '/api/items/9')).status).toBe(404);

    const created = await agent.get('hono.test', '/api/items', { method: 'POST', headers: json, body: JSON.stringify({ name: 'mocha', price: 3.9 }) });
    expect(created.status).toBe(201);
    expect(created.headers.get('location')).toBe('/api/items/2');
    const refused = await agent.get('hono.test', '/api/items', { method: 'POST', headers: json, body: JSON.stringify({ name: '', price: 1 }) });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ error: 'name is required' });
    expect((await agent.get('hono.test', '/api/items', { method: 'POST', headers: json, body: JSON.stringify({ name: 'x', price: 'free' }) })).status).toBe(400);

    expect((await agent.get('hono.test', '/admin/stats')).status).toBe(401);
    expect(await (await agent.get('hono.test', '/admin/stats', { headers: { authorization: 'Bearer s3cret' } })).json()).toEqual({ items: 2 });
    const missing = await agent.get('hono.test', '/nope');
    expect([missing.status, await missing.text()]).toEqual([404, 'no such route']);
  });
});

describe('an MCP server (@modelcontextprotocol/sdk on npm, streamable HTTP)', () => {
  it('answers tools/list and tools/call from the MCP SDK client', async () => {
    const client = new Client({ name: 'edge-isolates-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${agent.url}/mcp`)));
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toEqual(['add']);
      expect(tools[0]!.inputSchema).toMatchObject({ type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } } });
      const sum = await client.callTool({ name: 'add', arguments: { a: 2, b: 40 } });
      expect(sum.content).toEqual([{ type: 'text', text: '42' }]);
      // Arguments the tool's schema refuses: an error result, not a crash.
      const bad = await client.callTool({ name: 'add', arguments: { a: 'two', b: 40 } });
      expect(bad.isError).toBe(true);
    } finally {
      await client.close();
    }
  });
});

describe('cloudflare:email', () => {
  // What the Agents SDK imports at its top level; there is no send_email binding to send it with.
  it('gives EmailMessage to a bundled worker', async () => {
    expect(await (await agent.get('email.test', '/')).json()).toEqual({ from: 'agent@example.com', to: 'ada@example.com', raw: 'Subject: hi\r\n\r\nhello', isClass: true });
  });
});
