/** Limits the consumer runners enforce, with their defaults in one place. */

/** Bytes a peer may leave unread before the next send sheds it (WebSocket close 1013; an HTTP stream is cut). Default 1 MiB. */
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;

/** Socket frames queued for a busy consumer before the binding stops reading from the peer (TCP backpressure). Default 256. */
export const FRAME_QUEUE_HIGH_WATER = 256;

/** Queued frames under which reading resumes. Default 32. */
export const FRAME_QUEUE_LOW_WATER = 32;
