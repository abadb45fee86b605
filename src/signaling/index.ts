/** The call app: protocol v1 over the channel layer. */
export { createCallConsumer, originAllowed, type CallDeps } from './call-consumer.js';
export { Seats, names, readSeat, type Seat, type SeatData } from './seats.js';
export { iceServersFor, turnCredentials, type IceServer, type IceConfig } from './ice.js';
export { signAccessToken, checkAccessToken } from './tokens.js';
export { isCallId, randomId, safeEqual, CALL_ID, makeResumeToken, parseResumeToken } from './ids.js';
export { ERRORS, errorMessage, parseClientMessage, type ErrorCode } from './protocol.js';
export { RateLimit } from './rate-limit.js';
export { SignalingMetrics } from './metrics.js';
export { SeatWatch } from './grace.js';
