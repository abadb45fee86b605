/**
 * A WebSocket client written on a bare TCP socket, for what `ws` will not send: text frames with
 * invalid UTF-8, reserved opcodes, half-written upgrade requests, and a socket that stops
 * reading or answering pings while the kernel keeps the connection open.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

/** Encodes one client frame (masked, as RFC 6455 requires of clients). */
export function encodeFrame(opcode: number, payload: Buffer, opts: { fin?: boolean; rsv?: number; mask?: boolean } = {}): Buffer {
  const fin = opts.fin ?? true;
  const masked = opts.mask ?? true;
  const len = payload.length;
  const head: number[] = [(fin ? 0x80 : 0) | ((opts.rsv ?? 0) << 4) | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (len < 126) head.push(maskBit | len);
  else if (len < 65536) head.push(maskBit | 126, len >> 8, len & 0xff);
  else {
    head.push(maskBit | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([Buffer.from(head), key, body]);
}

/** A server frame as parsed by RawSocket. */
export interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** An upgraded (or not) raw socket. */
export interface RawSocket {
  socket: net.Socket;
  /** The HTTP status line and headers the server answered with. */
  head: string;
  status: number;
  /** Frames received, in order. */
  frames: ServerFrame[];
  /** Text frames parsed as JSON (or the text). */
  messages(): unknown[];
  /** Resolves once the TCP connection is closed, with the close frame's code if one came. */
  ended: Promise<{ closeCode: number | undefined; reason: string }>;
  /** Sends a frame. */
  sendFrame(opcode: number, payload: Buffer, opts?: { fin?: boolean; rsv?: number; mask?: boolean }): void;
  /** Waits until a frame matching `test` arrives. */
  waitFrame(test: (f: ServerFrame) => boolean, timeoutMs?: number): Promise<ServerFrame>;
}

/** Opens a TCP connection and performs a WebSocket upgrade of `path` by hand. */
export function rawUpgrade(port: number, path: string, headers: Record<string, string> = {}): Promise<RawSocket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let closeCode: number | undefined;
    let reason = '';
    const frames: ServerFrame[] = [];
    const waiters = new Set<() => void>();
    const ended = new Promise<{ closeCode: number | undefined; reason: string }>((r) => socket.once('close', () => r({ closeCode, reason })));
    const raw: RawSocket = {
      socket,
      head: '',
      status: 0,
      frames,
      messages: () =>
        frames
          .filter((f) => f.opcode === 1)
          .map((f) => {
            try {
              return JSON.parse(f.payload.toString('utf8')) as unknown;
            } catch {
              return f.payload.toString('utf8');
            }
          }),
      ended,
      sendFrame(opcode, payload, opts) {
        socket.write(encodeFrame(opcode, payload, opts));
      },
      waitFrame(test, timeoutMs = 3000) {
        return new Promise((res, rej) => {
          const check = () => {
            const f = frames.find(test);
            if (f) {
              clearTimeout(timer);
              waiters.delete(check);
              res(f);
            }
          };
          const timer = setTimeout(() => {
            waiters.delete(check);
            rej(new Error(`no matching frame within ${timeoutMs} ms; got opcodes [${frames.map((f) => f.opcode).join(',')}]`));
          }, timeoutMs);
          waiters.add(check);
          check();
        });
      },
    };
    const parseFrames = () => {
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0]! & 0x0f;
        let len = buf[1]! & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        frames.push({ opcode, payload: Buffer.from(payload) });
        if (opcode === 8 && payload.length >= 2) {
          closeCode = payload.readUInt16BE(0);
          reason = payload.subarray(2).toString('utf8');
        }
        for (const w of [...waiters]) w();
      }
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        raw.head = buf.subarray(0, end).toString('latin1');
        raw.status = Number(/^HTTP\/1\.1 (\d+)/.exec(raw.head)?.[1] ?? 0);
        buf = buf.subarray(end + 4);
        upgraded = true;
        resolve(raw);
      }
      parseFrames();
    });
    socket.on('error', (err) => {
      if (!upgraded) reject(err);
    });
    socket.once('close', () => {
      if (!upgraded) reject(new Error('the connection closed before an HTTP answer'));
    });
    const key = randomBytes(16).toString('base64');
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}
