/** A send failed because the destination channel holds `capacity` messages already. */
export class ChannelFull extends Error {
  override readonly name = 'ChannelFull';
  /** Stable error code. */
  readonly code = 'channel-full';
  constructor(readonly channel: string, readonly capacity: number) {
    super(`Channel ${channel} is full (capacity ${capacity})`);
  }
}

/** A send failed because the encoded message is over `maxMessageSize` bytes. */
export class MessageTooLarge extends Error {
  override readonly name = 'MessageTooLarge';
  /** Stable error code. */
  readonly code = 'message-too-large';
  constructor(readonly size: number, readonly limit: number) {
    super(`Message is ${size} bytes encoded, over the limit of ${limit}`);
  }
}

/** The layer was configured wrongly (unknown option, bad value). */
export class InvalidChannelLayerError extends Error {
  override readonly name = 'InvalidChannelLayerError';
  /** Stable error code. */
  readonly code = 'invalid-layer-config';
}

/** The layer was closed; pending and later calls fail with this. */
export class LayerClosed extends Error {
  override readonly name = 'LayerClosed';
  /** Stable error code. */
  readonly code = 'layer-closed';
  constructor() {
    super('The channel layer is closed');
  }
}

/**
 * A received message could not be decrypted (Redis layer with `symmetricEncryptionKeys`): it was
 * sealed with a key this layer does not have, or altered. The message is consumed; the next
 * receive gets the next one.
 */
export class UndecryptableMessage extends Error {
  override readonly name = 'UndecryptableMessage';
  /** Stable error code. */
  readonly code = 'undecryptable-message';
  constructor(why: string) {
    super(`A message on the channel layer could not be decrypted: ${why}`);
  }
}
