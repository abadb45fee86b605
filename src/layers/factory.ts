import { InvalidChannelLayerError } from './errors.js';
import { InMemoryChannelLayer } from './memory.js';
import { RedisChannelLayer } from './redis.js';
import type { ChannelLayer, LayerOptions, RedisLayerOptions } from './types.js';

/** Options for `createChannelLayer`: `backend` picks the layer; without it, Redis when `hosts` or `clusterHosts` is given. */
export type CreateChannelLayerOptions =
  | ({ backend: 'memory' } & LayerOptions)
  | ({ backend: 'redis' } & RedisLayerOptions)
  | ({ backend?: undefined } & RedisLayerOptions);

/** Builds the channel layer the options describe. */
export function createChannelLayer(options: CreateChannelLayerOptions = {}): ChannelLayer & { readonly kind: 'memory' | 'redis' } {
  const { backend, ...rest } = options;
  const redis = backend === 'redis' || (backend === undefined && ((rest as RedisLayerOptions).hosts !== undefined || (rest as RedisLayerOptions).clusterHosts !== undefined));
  if (backend !== undefined && backend !== 'memory' && backend !== 'redis') {
    throw new InvalidChannelLayerError(`Unknown backend ${JSON.stringify(backend)}; use "memory" or "redis"`);
  }
  return redis ? new RedisChannelLayer(rest as RedisLayerOptions) : new InMemoryChannelLayer(rest as LayerOptions);
}
