/** The in-process consumer harnesses (implemented in src/consumers/testing.ts, exported from src/consumers). */
export {
  WebsocketCommunicator, HttpCommunicator, RecordingLogger,
  type WebsocketCommunicatorOptions, type HttpCommunicatorOptions, type ConnectResult, type Output, type HttpResponse,
} from '../../src/consumers/index.js';
