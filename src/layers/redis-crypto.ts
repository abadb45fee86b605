/**
 * Messages encrypted at rest and in flight through Redis (the `symmetricEncryptionKeys` option):
 * AES-256-GCM, authenticated, with key = SHA-256(key string). The first key seals; every key
 * opens, so keys rotate by putting the new one first and dropping the old one after `expiry`.
 *
 * Sealed layout: key id (4 bytes: the start of SHA-256 of the key) | IV (12) | tag (16) | ciphertext.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { InvalidChannelLayerError, UndecryptableMessage } from './errors.js';

const ID_BYTES = 4;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Bound into every tag, so bytes sealed for something else never open as a message. */
const AAD = Buffer.from('callsig.layer.message.v1');

interface Key {
  id: Buffer;
  secret: Buffer;
}

/** Seals and opens message bytes with a list of keys. */
export class MessageCipher {
  private readonly keys: Key[];

  constructor(keys: unknown) {
    if (!Array.isArray(keys) || keys.length === 0) {
      throw new InvalidChannelLayerError('Option symmetricEncryptionKeys must be a non-empty array of strings (the first encrypts, all decrypt)');
    }
    this.keys = keys.map((key, i) => {
      if (typeof key !== 'string' || key.length === 0) {
        throw new InvalidChannelLayerError(`Option symmetricEncryptionKeys[${i}] must be a non-empty string`);
      }
      const secret = createHash('sha256').update(key).digest();
      return { secret, id: createHash('sha256').update(secret).digest().subarray(0, ID_BYTES) };
    });
  }

  /** Encrypts with the first key. */
  seal(plain: Uint8Array): Buffer {
    const key = this.keys[0]!;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key.secret, iv);
    cipher.setAAD(AAD);
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([key.id, iv, cipher.getAuthTag(), body]);
  }

  /** Decrypts with whichever key sealed it; throws UndecryptableMessage when none did or the bytes were altered. */
  open(sealed: Uint8Array): Buffer {
    const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (bytes.length < ID_BYTES + IV_BYTES + TAG_BYTES) throw new UndecryptableMessage('it is too short to be encrypted');
    const id = bytes.subarray(0, ID_BYTES);
    const key = this.keys.find((k) => k.id.equals(id));
    if (!key) throw new UndecryptableMessage('none of symmetricEncryptionKeys encrypted it');
    const iv = bytes.subarray(ID_BYTES, ID_BYTES + IV_BYTES);
    const tag = bytes.subarray(ID_BYTES + IV_BYTES, ID_BYTES + IV_BYTES + TAG_BYTES);
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.secret, iv);
      decipher.setAAD(AAD);
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(bytes.subarray(ID_BYTES + IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new UndecryptableMessage('its authentication tag does not match (altered, or sealed with another key)');
    }
  }
}
