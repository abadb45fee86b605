/** The channel layer: the public surface of `callsig/layers`. */
export type {
  ChannelLayer, Message, MessageSink, MessageValue, ReceiveOptions, LayerOptions, RedisLayerOptions, CapacityPattern,
  RosterEntry, RosterJoinResult, RosterJoinOptions, RosterChangeOptions,
} from './types.js';
export { ChannelFull, MessageTooLarge, InvalidChannelLayerError, LayerClosed, UndecryptableMessage } from './errors.js';
export { requireValidChannelName, requireValidGroupName, nonLocalName, layerIdOf, globToRegExp, MAX_NAME_LENGTH } from './names.js';
export { encodeMessage, decodeMessage, requireValidMessage } from './codec.js';
export { DEFAULT_LAYER_OPTIONS } from './options.js';
export { BaseChannelLayer, SETTLED } from './base.js';
export { InMemoryChannelLayer } from './memory.js';
export { RedisChannelLayer } from './redis.js';
export { createChannelLayer, type CreateChannelLayerOptions } from './factory.js';
