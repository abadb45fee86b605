/**
 * A small chat-room app used to run the same consumer over InMemory in one process and over
 * Redis across two: WebSocket members of `room.<name>`, and an HTTP route that posts to a room.
 */
import type { Hono } from 'hono';
import { JsonWebsocketConsumer } from '../../../src/consumers/index.js';
import type { ConsumerServer } from '../../../src/hono/index.js';
import type { ChannelLayer, Message } from '../../../src/layers/index.js';

/** Joins `room.<room>`; relays what its client says to the room; forwards room and direct messages. */
export class RoomConsumer extends JsonWebsocketConsumer {
  static override handles = ['room.message', 'direct.message'];

  private get room(): string {
    return `room.${this.scope.params.room ?? 'none'}`;
  }

  override groups(): string[] {
    return [this.room];
  }

  override async connect(): Promise<void> {
    await this.accept();
    await this.sendJson({ type: 'joined', channel: this.channelName, pid: process.pid });
  }

  override async receiveJson(content: unknown): Promise<void> {
    const { text } = content as { text: string };
    await this.channelLayer.groupSend(this.room, { type: 'room.message', text, pid: process.pid });
  }

  async roomMessage(m: Message): Promise<void> {
    await this.sendJson({ type: 'message', text: m.text, pid: m.pid });
  }

  async directMessage(m: Message): Promise<void> {
    await this.sendJson({ type: 'direct', text: m.text });
  }
}

/** The routes of the room app. */
export function roomRoutes(consumers: ConsumerServer, app: Hono, layer: ChannelLayer): void {
  consumers.websocket('/ws/room/:room', RoomConsumer);
  app.post('/rooms/:room', async (c) => {
    await layer.groupSend(`room.${c.req.param('room')}`, { type: 'room.message', text: await c.req.text(), pid: process.pid });
    return c.json({ sent: true });
  });
}
