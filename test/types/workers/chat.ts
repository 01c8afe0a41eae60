// Public Durable Objects code as the seeds write it: partyserver (hibernating
// WebSockets on `cloudflare:workers`) and durable-utils (SQL migrations on
// `ctx.storage.sql`), compiled against workers-types. Types only for now: it needs the
// `cloudflare:workers`, SQLite and hibernation entries of ../workers-api.ts to be there.
import { routePartykitRequest, Server, type Connection, type ConnectionContext, type WSMessage } from 'partyserver';
import { SQLSchemaMigrations } from 'durable-utils/sql-migrations';

interface Env extends Cloudflare.Env {
  Chat: DurableObjectNamespace<Chat>;
}

export class Chat extends Server<Env> {
  static override options = { hibernate: true };
  private readonly migrations = new SQLSchemaMigrations({
    doStorage: this.ctx.storage,
    migrations: [{ idMonotonicInc: 1, description: 'messages', sql: 'CREATE TABLE messages (id INTEGER PRIMARY KEY, text TEXT NOT NULL)' }],
  });

  override async onStart(): Promise<void> {
    await this.migrations.runAll();
  }

  override onConnect(connection: Connection, ctx: ConnectionContext): void {
    const last = this.ctx.storage.sql.exec<{ text: string }>('SELECT text FROM messages ORDER BY id DESC LIMIT 10').toArray();
    connection.send(JSON.stringify({ history: last.map((r) => r.text), from: new URL(ctx.request.url).pathname }));
  }

  override onMessage(connection: Connection, message: WSMessage): void {
    const text = typeof message === 'string' ? message : new TextDecoder().decode(message);
    this.ctx.storage.sql.exec('INSERT INTO messages (text) VALUES (?)', text);
    this.broadcast(text, [connection.id]);
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    return (await routePartykitRequest(request, env)) ?? new Response('not found', { status: 404 });
  },
} satisfies ExportedHandler<Env>;
