/**
 * An HttpConsumer's response as a web `Response` whose body is a stream the consumer writes to,
 * so @hono/node-server sends the head at `sendHeaders` and each chunk as it comes (SSE).
 */
import type { HttpTransport, HttpTransportEvents } from '../consumers/index.js';

/** Statuses whose responses have no body. */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

/** A response streamed from a consumer. */
export class StreamingResponse implements HttpTransport {
  /** Resolves with the Response once the consumer starts it. */
  readonly response: Promise<Response>;
  private resolve!: (response: Response) => void;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly stream: ReadableStream<Uint8Array>;
  private nullBody = false;
  private closed = false;

  constructor(private readonly events: () => HttpTransportEvents) {
    this.response = new Promise((resolve) => (this.resolve = resolve));
    // A high-water mark of 0 makes desiredSize the negative of the bytes not yet taken by the
    // server's writer, which stops taking while the client does not read: that is bufferedAmount.
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller;
        },
        cancel: () => {
          this.closed = true;
          this.events().gone();
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: 0 }),
    );
  }

  /** Answers a client that left before the response started (nobody will read this). */
  abandon(): void {
    this.resolve(new Response(null, { status: 499 }));
  }

  start(status: number, headers: Record<string, string>): void {
    this.nullBody = NULL_BODY_STATUSES.has(status);
    this.resolve(new Response(this.nullBody ? null : this.stream, { status, headers }));
  }

  write(chunk: Uint8Array): void {
    if (this.nullBody || this.closed) return;
    this.controller.enqueue(chunk);
  }

  end(): void {
    if (this.nullBody || this.closed) return;
    this.closed = true;
    this.controller.close();
  }

  abort(reason: string): void {
    if (this.nullBody || this.closed) return;
    this.closed = true;
    this.controller.error(new Error(reason));
  }

  get bufferedAmount(): number {
    if (this.closed) return 0;
    return Math.max(0, -(this.controller.desiredSize ?? 0));
  }
}
