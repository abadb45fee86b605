// PeerJS server 1.0.2 (npm `peer`), started the way its README shows, on a loopback port.
// Env PORT (0 picks a free one). Prints one JSON line with the port once it listens.
import { PeerServer } from 'peer';

PeerServer(
  {
    host: '127.0.0.1',
    port: Number(process.env.PORT ?? 0),
    path: '/',
    key: 'peerjs',
    // The default cap (5000 clients) would refuse the tail of the 5,000-peer idle test, whose
    // first peer may still be registered when the last connects; PeerJS' docs say to raise it.
    concurrent_limit: 20000,
  },
  (server) => console.log(JSON.stringify({ msg: 'listening', port: server.address().port })),
);
process.on('SIGTERM', () => process.exit(0)); // a clean exit, so --cpu-prof writes its profile
