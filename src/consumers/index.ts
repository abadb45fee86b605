/** Channels-style consumers: the public surface of `callsig/consumers`. */
export { Consumer, handlerName, handlerTable, type ConsumerClassLike } from './consumer.js';
export { WebsocketConsumer, JsonWebsocketConsumer, type Frame, type PrecheckRefusal } from './websocket.js';
export { HttpConsumer } from './http.js';
export { StopConsumer, DenyConnection, DispatchError, type DispatchErrorCode } from './errors.js';
export { RequestScope, ScopeHeaders, WEBSOCKET_HANDSHAKE_HEADERS, createScope, parseSubprotocols, queryParam, type RequestScopeFields, type Scope, type ScopeInit } from './scope.js';
export { consoleLogger, RecordingLogger, type Logger, type LogEntry } from './logger.js';
export { CloseCode, isValidCloseCode, requireValidClose, MAX_CLOSE_REASON_BYTES } from './close-codes.js';
export { DEFAULT_MAX_BUFFERED_BYTES } from './options.js';
export { RESOLVED, type WebsocketState, type HttpState } from './internal.js';
export type { WebsocketTransport, WebsocketTransportEvents, HttpTransport, HttpTransportEvents } from './transport.js';
export { callHook, type ConsumerHooks, type RunnerOptions } from './runner.js';
export { WebsocketRunner, type WebsocketRunnerOptions } from './websocket-runner.js';
export { HttpRunner, type HttpRunnerOptions } from './http-runner.js';
export { runPrecheck, type PrecheckClass } from './precheck.js';
export type { ChannelLayer, Message } from '../layers/index.js';
export {
  WebsocketCommunicator, HttpCommunicator,
  type WebsocketCommunicatorOptions, type HttpCommunicatorOptions, type ConnectResult, type Output, type HttpResponse,
} from './testing.js';
