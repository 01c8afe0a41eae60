import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * An upstream accepted a WebSocket (or any upgrade) the client asked a relay for: writes the
 * upstream's 101 to the client and joins the two connections until either side closes. Used
 * by the agent's front towards an isolate host and by a host forwarding to a shard member.
 * `tunnels` holds both sockets while they are joined (a drain closes what is left).
 */
export function spliceUpgrade(
  res: ServerResponse, client: { socket: Socket; head: Buffer }, upstreamRes: IncomingMessage,
  upstream: Socket, upstreamHead: Buffer, tunnels?: Set<Socket>,
): void {
  const down = client.socket;
  res.detachSocket(down);
  let head = `HTTP/1.1 101 ${upstreamRes.statusMessage || 'Switching Protocols'}\r\n`;
  const raw = upstreamRes.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) head += `${raw[i]!}: ${raw[i + 1]!}\r\n`;
  down.write(`${head}\r\n`);
  if (upstreamHead.length > 0) down.write(upstreamHead);
  if (client.head.length > 0) upstream.write(client.head);
  tunnels?.add(down);
  tunnels?.add(upstream);
  const close = () => {
    tunnels?.delete(down);
    tunnels?.delete(upstream);
    down.destroy();
    upstream.destroy();
  };
  down.on('error', close);
  upstream.on('error', close);
  down.on('close', close);
  upstream.on('close', close);
  upstream.pipe(down);
  down.pipe(upstream);
}
