import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * How often the event-loop-lag metrics sample the loop (ms). prom-client's default of 10 ms wakes
 * an idle server 100 times a second: 1.2 % of a core with nobody connected, measured, against
 * 0.3 % at 100 ms (a tenth of Render's free-tier CPU went on it). Stalls of 100 ms and more,
 * the ones a call feels, are still caught every time.
 */
export const EVENT_LOOP_RESOLUTION_MS = 100;

/** The server's Prometheus metrics, on a registry of its own (so several apps can live in one process). */
export class SignalingMetrics {
  readonly registry = new Registry();
  readonly connections = new Gauge({ name: 'signaling_connections', help: 'Open WebSocket connections to calls', registers: [this.registry] });
  readonly calls = new Gauge({ name: 'signaling_calls', help: 'Calls with at least one peer connected to this worker', registers: [this.registry] });
  readonly signals = new Counter({ name: 'signaling_signals_relayed_total', help: 'Signals relayed to peers', registers: [this.registry] });
  readonly errors = new Counter({ name: 'signaling_errors_total', help: 'Errors answered to clients, by protocol code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly resumes = new Counter({ name: 'signaling_resumes_total', help: 'Seats taken back with a resume token', registers: [this.registry] });
  readonly layerLatency = new Histogram({
    name: 'signaling_layer_send_seconds',
    help: 'Time to hand a message to the channel layer',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS });
  }
}
