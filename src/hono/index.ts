/** Binding consumers to Hono routes on @hono/node-server: the public surface of `callsig/hono`. */
export { createConsumerServer, type ConsumerServer, type WebsocketConsumerClass, type HttpConsumerClass } from './consumer-server.js';
export { DEFAULT_SERVER_OPTIONS, type ConsumerServerOptions } from './options.js';
export { scopeFromContext } from './scope.js';
