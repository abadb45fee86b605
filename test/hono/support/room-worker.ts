/**
 * A second process serving the room app over the Redis layer at REDIS_URL. Prints
 * `LISTENING <port>` once it serves; SIGTERM shuts it down cleanly.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import type { AddressInfo } from 'node:net';
import { createConsumerServer } from '../../../src/hono/index.js';
import { RedisChannelLayer } from '../../../src/layers/index.js';
import { roomRoutes } from './room.js';

const layer = new RedisChannelLayer({ hosts: process.env.REDIS_URL! });
const app = new Hono();
const consumers = createConsumerServer({ app, layer });
roomRoutes(consumers, app, layer);
const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
  process.stdout.write(`LISTENING ${info.port}\n`);
});
consumers.inject(server);

process.once('SIGTERM', () => {
  void (async () => {
    await consumers.shutdown(1001, 2000);
    server.close();
    await layer.close();
    process.exit(0);
  })();
});
