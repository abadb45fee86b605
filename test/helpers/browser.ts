/**
 * Real-browser helpers for test/browser: Debian's Chromium driven by playwright-core, with a fake
 * camera and microphone, probes that read what a person would see on a call page, and server
 * processes (`node dist/main.js`) to kill mid-call.
 *
 * Offline, with `iceServers: []`, two pages connect over host candidates on the machine's
 * ordinary interface (Chromium ignores loopback for ICE), so the box needs one (eth0 here).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ensureBuilt as buildIfStale, MAIN } from './build.js';
import { spawnProcess, waitForListening } from './server-process.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Debian's Chromium (`apt-get install -y chromium`); never playwright's own download. */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/** The flags every test browser runs with: a fake camera and mic, auto-accepted, raw host candidates. */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** True when Chromium is installed. */
export const hasChromium = existsSync(CHROMIUM_PATH);

/** Says loudly that a suite is skipped, and why. */
export function warnSkipped(suite: string, reason: string): void {
  console.warn(`\n*** SKIPPED: ${suite}: ${reason} ***\n`);
}

/** The reason browser suites are skipped without Chromium. */
export const NO_CHROMIUM = `${CHROMIUM_PATH} is missing; install it with \`apt-get update && apt-get install -y chromium\` (CI's .ci/run does)`;

/** Starts headless Chromium with CHROMIUM_FLAGS. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_FLAGS });
}

/**
 * Runs in every page before its own scripts: records each `data-call-state` the page shows,
 * keeps a list of the RTCPeerConnections it makes (behaviour unchanged), optionally blocks the
 * camera and microphone as a person who said "Block" would, and offers probes to the tests.
 */
const INSTRUMENT = `(() => {
  const states = [];
  window.__callStates = states;
  const record = () => {
    const s = document.body && document.body.dataset.callState;
    if (s && states[states.length - 1] !== s) states.push(s);
  };
  new MutationObserver(record).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-call-state'] });

  const pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
      const seen = [this.connectionState];
      this.__connectionStates = seen;
      this.addEventListener('connectionstatechange', () => seen.push(this.connectionState));
    }
  };

  if (window.__blockMedia) {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  }

  window.__probe = {
    states: () => states.slice(),
    peerConnections: () => pcs.length,
    openPeerConnections: () => pcs.filter((pc) => pc.connectionState !== 'closed').length,
    connectionStates: () => pcs.map((pc) => pc.__connectionStates.slice()),
    async sampleWhile(state, everyMs) {
      const samples = [];
      while (document.body.dataset.callState === state) {
        samples.push(await this.inboundBytes());
        await new Promise((r) => setTimeout(r, everyMs));
      }
      return samples;
    },
    closeAnswererConnection() {
      const pc = pcs.filter((p) => p.connectionState !== 'closed').find((p) => p.localDescription && p.localDescription.type === 'answer');
      if (!pc) return false;
      pc.close();
      return true;
    },
    async inboundBytes() {
      const out = { audio: 0, video: 0 };
      for (const pc of pcs) {
        if (pc.connectionState === 'closed') continue;
        const stats = await pc.getStats();
        stats.forEach((r) => { if (r.type === 'inbound-rtp' && (r.kind in out)) out[r.kind] += r.bytesReceived || 0; });
      }
      return out;
    },
    async audioEnergy() {
      let total = 0;
      for (const pc of pcs) {
        if (pc.connectionState === 'closed') continue;
        (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') total += r.totalAudioEnergy || 0; });
      }
      return total;
    },
    remoteBrightness() {
      const v = document.querySelector('.remote video');
      if (!v || !v.videoWidth) return -1;
      const c = document.createElement('canvas');
      c.width = 32;
      c.height = 32;
      const g = c.getContext('2d', { willReadFrequently: true });
      g.drawImage(v, 0, 0, 32, 32);
      const d = g.getImageData(0, 0, 32, 32).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;
      return sum / (d.length / 4);
    },
    remoteVideo() {
      const v = document.querySelector('.remote video');
      return v ? { width: v.videoWidth, height: v.videoHeight, time: v.currentTime, paused: v.paused } : null;
    },
  };
})();`;

/** The page's global object, as functions run in the page see it (the DOM lib is not in this project's tsconfig). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type PageGlobal = any;

/** A browser context (one person) with a call page. */
export interface CallPage {
  page: Page;
  context: BrowserContext;
  /** Console lines and page errors, in order. */
  logs: string[];
}

/** Options for `openCallPage`. */
export interface OpenOptions {
  viewport?: { width: number; height: number };
  /** Refuse the camera and microphone (getUserMedia rejects with NotAllowedError). */
  blockMedia?: boolean;
}

/** Opens `url` in a fresh context (its own person), instrumented with INSTRUMENT. */
export async function openCallPage(browser: Browser, url: string, opts: OpenOptions = {}): Promise<CallPage> {
  const context = await browser.newContext({ viewport: opts.viewport ?? { width: 1280, height: 720 }, permissions: ['camera', 'microphone'] });
  if (opts.blockMedia) await context.addInitScript({ content: 'window.__blockMedia = true;' });
  await context.addInitScript({ content: INSTRUMENT });
  const page = await context.newPage();
  const logs: string[] = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(url);
  return { page, context, logs };
}

/** Console lines that show the page broken: uncaught errors and Content Security Policy refusals. */
export function pageProblems(cp: CallPage): string[] {
  return cp.logs.filter((l) => /^pageerror:|Content Security Policy|Refused to (load|execute|apply|connect)/.test(l));
}

/** The page's current `data-call-state`. */
export function callState(cp: CallPage): Promise<string> {
  return cp.page.evaluate('document.body.dataset.callState') as Promise<string>;
}

/** Every `data-call-state` the page has shown, in order. */
export function stateHistory(cp: CallPage): Promise<string[]> {
  return cp.page.evaluate('window.__probe.states()') as Promise<string[]>;
}

/** Waits for `data-call-state` to be `state`; on timeout, the error shows the history and the page's log. */
export async function waitForCallState(cp: CallPage, state: string, timeoutMs = 20_000): Promise<void> {
  try {
    // A function, not a string: the page's CSP (no 'unsafe-eval') refuses string predicates.
    await cp.page.waitForFunction((s) => (globalThis as PageGlobal).document.body.dataset.callState === s, state, { timeout: timeoutMs, polling: 50 });
  } catch (err) {
    const history = await stateHistory(cp).catch(() => []);
    throw new Error(`page never reached "${state}" within ${timeoutMs} ms (states: ${history.join(' → ')})\n${cp.logs.slice(-30).join('\n')}`, { cause: err });
  }
}

/** Waits until the page has shown `state` at some point (it may have moved on since). */
export async function waitForStateSeen(cp: CallPage, state: string, timeoutMs = 20_000): Promise<void> {
  try {
    await cp.page.waitForFunction((s) => (globalThis as PageGlobal).__probe.states().includes(s), state, { timeout: timeoutMs, polling: 20 });
  } catch (err) {
    const history = await stateHistory(cp).catch(() => []);
    throw new Error(`page never showed "${state}" within ${timeoutMs} ms (states: ${history.join(' → ')})\n${cp.logs.slice(-30).join('\n')}`, { cause: err });
  }
}

/** The page's status line. */
export function statusText(cp: CallPage): Promise<string> {
  return cp.page.locator('#status').innerText();
}

/** Bytes received so far over the page's open peer connections, by kind. */
export function inboundBytes(cp: CallPage): Promise<{ audio: number; video: number }> {
  return cp.page.evaluate('window.__probe.inboundBytes()') as Promise<{ audio: number; video: number }>;
}

/** The page's peer connections: all it ever made, and those still open. */
export async function peerConnectionCount(cp: CallPage): Promise<{ made: number; open: number }> {
  const [made, open] = (await cp.page.evaluate('[window.__probe.peerConnections(), window.__probe.openPeerConnections()]')) as [number, number];
  return { made, open };
}

/** Each peer connection the page made: the connection states it went through. */
export function connectionStates(cp: CallPage): Promise<string[][]> {
  return cp.page.evaluate('window.__probe.connectionStates()') as Promise<string[][]>;
}

/** Samples the received bytes every `everyMs` for as long as the page shows `state`. */
export function sampleBytesWhile(cp: CallPage, state: string, everyMs = 100): Promise<Array<{ audio: number; video: number }>> {
  return cp.page.evaluate(([s, ms]) => (globalThis as PageGlobal).__probe.sampleWhile(s, ms), [state, everyMs] as const);
}

/** The first remote <video>: its size, position and whether it is paused. */
export interface RemoteVideo { width: number; height: number; time: number; paused: boolean }

/** Reads the first remote <video>, or null when there is none. */
export function remoteVideo(cp: CallPage): Promise<RemoteVideo | null> {
  return cp.page.evaluate('window.__probe.remoteVideo()') as Promise<RemoteVideo | null>;
}

/** Samples the remote video and the received bytes twice, `ms` apart (after a first frame has arrived). */
export async function sampleMedia(cp: CallPage, ms = 1000) {
  await cp.page.waitForFunction(() => {
    const v = (globalThis as PageGlobal).__probe.remoteVideo();
    return v !== null && v.width > 0 && v.time > 0;
  }, undefined, { timeout: 15_000, polling: 100 });
  const before = { video: (await remoteVideo(cp))!, bytes: await inboundBytes(cp) };
  await new Promise((r) => setTimeout(r, ms));
  const after = { video: (await remoteVideo(cp))!, bytes: await inboundBytes(cp) };
  return { before, after };
}

/** Mean brightness (0-255) of the first remote video's current frame, or -1 before it has one. */
export function remoteBrightness(cp: CallPage): Promise<number> {
  return cp.page.evaluate('window.__probe.remoteBrightness()') as Promise<number>;
}

/** Waits until the first remote video's mean brightness is within [min, max] (0 to 4: a black picture). */
export async function waitForRemoteBrightness(cp: CallPage, min: number, max: number, timeoutMs = 10_000): Promise<void> {
  await cp.page.waitForFunction(([lo, hi]) => {
    const b = (globalThis as PageGlobal).__probe.remoteBrightness() as number;
    return b >= lo && b <= hi;
  }, [min, max] as const, { timeout: timeoutMs, polling: 100 });
}

/** Total energy of the audio received so far (inbound-rtp totalAudioEnergy). */
export function audioEnergy(cp: CallPage): Promise<number> {
  return cp.page.evaluate('window.__probe.audioEnergy()') as Promise<number>;
}

/** Energy of the audio received during the next `ms` milliseconds. */
export async function audioEnergyOver(cp: CallPage, ms: number): Promise<number> {
  const before = await audioEnergy(cp);
  await new Promise((r) => setTimeout(r, ms));
  return (await audioEnergy(cp)) - before;
}

/**
 * Waits until `windowMs` of received audio carry less than `max` energy. Chromium's fake
 * microphone beeps about once a second, so a window shorter than that can fall between beeps;
 * and after a mute, what the receiver's jitter buffer already holds still plays, longer on a
 * busy machine. A mute that never reaches the other side times out here.
 */
export async function waitForAudioEnergyBelow(cp: CallPage, max: number, windowMs = 1200, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = Infinity;
  while (Date.now() < deadline) {
    last = await audioEnergyOver(cp, windowMs);
    if (last < max) return;
  }
  throw new Error(`every ${windowMs} ms of received audio carried ${max} energy or more for ${timeoutMs} ms (last ${last})`);
}

/** A free TCP port on 127.0.0.1 (for servers that must know each other's port before starting). */
export { freePort } from './redis-server.js';

/** Builds dist/ (as `npm run build` does) when dist/main.js is missing or older than src/. */
export const ensureBuilt = (): void => buildIfStale('browser tests');

/** A running `node dist/main.js`. */
export interface WorkerProcess {
  child: ChildProcess;
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port> */
  wsUrl: string;
  /** Its stdout and stderr lines. */
  lines: string[];
  /** Kills it with SIGKILL (no goodbye to its peers) and waits until it is gone. */
  kill(): Promise<void>;
  /** Stops it (SIGTERM, then SIGKILL after 5 s) and waits until it is gone. */
  stop(): Promise<void>;
}

/** Starts `node dist/main.js` with `env` and waits for its JSON "listening" line, which carries the port. */
export async function startWorkerProcess(env: Record<string, string>, timeoutMs = 20_000): Promise<WorkerProcess> {
  const p = spawnProcess({
    command: process.execPath,
    args: [MAIN],
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
  });
  const port = await waitForListening(p, { timeoutMs, what: 'node dist/main.js' });
  return {
    child: p.child,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    lines: p.lines,
    async kill() {
      p.forceKill();
      await p.exited;
    },
    async stop() {
      await p.stop('SIGTERM', 5000);
    },
  };
}

/** Creates a call on a server (POST /api/calls) and returns its id. */
export async function createCall(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/api/calls`, { method: 'POST' });
  if (res.status !== 201) throw new Error(`POST /api/calls answered ${res.status}: ${await res.text()}`);
  const body = (await res.json()) as { callId: string };
  return body.callId;
}
