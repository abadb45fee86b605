// A stand-in worker for hand-over.test.ts: takes each socket the primary hands over with the
// server's own takeConnection, into a server that echoes, and tells the primary what the socket
// carried when it arrived.
import net from 'node:net';
import { CONNECTION_MESSAGE, takeConnection } from '../../../dist/sticky.js';

const server = net.createServer((socket) => socket.on('data', (d) => socket.write(`echo:${d}`)));
process.on('message', (m, socket) => {
  if (m?.type !== CONNECTION_MESSAGE || !socket) return;
  const closeListeners = socket.listenerCount('close');
  takeConnection(server, socket, m);
  process.send({ closeListeners, head: m.head });
});
process.send({ ready: true });
