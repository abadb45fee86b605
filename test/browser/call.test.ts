/**
 * The web app in a real browser (Debian Chromium, fake camera and microphone) against one server
 * in this process (InMemory layer, no STUN: host candidates are enough on one machine). Each test
 * is one or more people, each in their own browser context, doing what a person does.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { startServer, type RunningServer } from '../../src/server.js';
import {
  ROOT, NO_CHROMIUM, audioEnergyOver, callState, createCall, hasChromium, launchChromium, openCallPage, pageProblems, peerConnectionCount,
  sampleMedia, stateHistory, statusText, waitForAudioEnergyBelow, waitForCallState, waitForRemoteBrightness, waitForStateSeen, warnSkipped,
  type CallPage,
} from '../helpers/browser.js';

if (!hasChromium) warnSkipped('test/browser/call.test.ts (the call page in a real browser)', NO_CHROMIUM);

/** Remote video plays (frames, advancing time) and audio and video bytes keep arriving. */
async function expectMediaFlowing(cp: CallPage): Promise<void> {
  const { before, after } = await sampleMedia(cp);
  expect(after.video.width).toBeGreaterThan(0);
  expect(after.video.height).toBeGreaterThan(0);
  expect(after.video.paused).toBe(false);
  expect(after.video.time).toBeGreaterThan(before.video.time);
  expect(after.bytes.video).toBeGreaterThan(before.bytes.video);
  expect(after.bytes.audio).toBeGreaterThan(before.bytes.audio);
}

describe.skipIf(!hasChromium)('a call in the browser, one server', { timeout: 60_000 }, () => {
  let server: RunningServer;
  let browser: Browser;
  let people: CallPage[] = [];

  const open = async (url: string, opts?: Parameters<typeof openCallPage>[2]) => {
    const cp = await openCallPage(browser, url, opts);
    people.push(cp);
    return cp;
  };
  /** Two people in a fresh call, both connected: the first was waiting, the second joined. */
  const connectedPair = async () => {
    const link = `${server.url}/c/${await createCall(server.url)}`;
    const first = await open(link);
    await waitForCallState(first, 'waiting');
    const second = await open(link);
    await Promise.all([waitForCallState(first, 'connected'), waitForCallState(second, 'connected')]);
    return { link, first, second };
  };

  beforeAll(async () => {
    server = await startServer({ env: { RATE_LIMIT: '0', STUN_URLS: '' } });
    browser = await launchChromium();
  });
  afterEach(async () => {
    const problems = people.flatMap(pageProblems);
    await Promise.all(people.map((p) => p.context.close()));
    people = [];
    expect(problems, 'the pages ran without errors or CSP refusals').toEqual([]);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('two people who open the same call link see and hear each other', async () => {
    const host = await open(`${server.url}/`);
    await host.page.getByRole('button', { name: 'Start a call' }).click();
    await host.page.waitForURL(/\/c\/[A-Za-z0-9_-]+$/);
    await waitForCallState(host, 'waiting');
    expect(await statusText(host)).toMatch(/Waiting for the other person/);
    const link = await host.page.getByLabel('Call link').inputValue();
    expect(link).toBe(host.page.url());

    const guest = await open(link);
    await Promise.all([waitForCallState(host, 'connected'), waitForCallState(guest, 'connected')]);
    expect(await statusText(guest)).toMatch(/Connected/);
    await expectMediaFlowing(host);
    await expectMediaFlowing(guest);
    expect(await host.page.locator('#invite').isHidden()).toBe(true);

    mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
    await host.page.screenshot({ path: path.join(ROOT, 'docs', 'screenshot.png') });
  });

  it('a third person is told the call is full, and the two inside notice nothing', async () => {
    const { link, first, second } = await connectedPair();
    const third = await open(link);
    await waitForCallState(third, 'full');
    await third.page.getByRole('heading', { name: 'This call is full' }).waitFor({ state: 'visible' });
    expect(await third.page.getByRole('link', { name: 'Start a new call' }).isVisible()).toBe(true);
    for (const inside of [first, second]) {
      expect(await callState(inside)).toBe('connected');
      expect((await stateHistory(inside)).at(-1)).toBe('connected');
    }
    await expectMediaFlowing(first);
  });

  it('when one person hangs up, the other is back to waiting', async () => {
    const { first, second } = await connectedPair();
    await second.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForCallState(second, 'ended');
    await second.page.getByRole('heading', { name: 'You left the call' }).waitFor({ state: 'visible' });
    await waitForCallState(first, 'waiting');
    expect(await statusText(first)).toMatch(/The other person hung up/);
    expect(await first.page.locator('.remote video').count()).toBe(0);
    expect(await first.page.locator('#invite').isVisible()).toBe(true);
  });

  it('someone whose camera and microphone are blocked still joins, and sees and hears the other person', async () => {
    const link = `${server.url}/c/${await createCall(server.url)}`;
    const blocked = await open(link, { blockMedia: true });
    await waitForCallState(blocked, 'waiting');
    expect(await blocked.page.getByRole('note').innerText()).toContain('blocking your camera and microphone');
    expect(await blocked.page.getByRole('button', { name: 'No microphone' }).isDisabled()).toBe(true);
    expect(await blocked.page.getByRole('button', { name: 'No camera' }).isDisabled()).toBe(true);
    const other = await open(link);
    await Promise.all([waitForCallState(blocked, 'connected'), waitForCallState(other, 'connected')]);
    await expectMediaFlowing(blocked);
    expect(await other.page.locator('#placeholder-text').innerText()).toMatch(/aren't sharing a camera or microphone/);
  });

  it('muting and turning the camera off reach the other person as silence and a black picture', async () => {
    const { first, second } = await connectedPair();
    await sampleMedia(second);
    const energyOver = (ms: number) => audioEnergyOver(second, ms);
    const brightness = (min: number, max: number) => waitForRemoteBrightness(second, min, max);
    await brightness(30, 255); // the fake camera's green picture
    const heard = await energyOver(1200);
    expect(heard).toBeGreaterThan(0);

    const mic = first.page.getByRole('button', { name: 'Mute' });
    const cam = first.page.getByRole('button', { name: 'Camera off' });
    await mic.click();
    await cam.click();
    expect(await mic.getAttribute('aria-pressed')).toBe('true');
    expect(await cam.getAttribute('aria-pressed')).toBe('true');
    await brightness(0, 4); // black frames
    // What the jitter buffer held before the mute plays out first (CI once heard a quarter of a
    // beep in the 1.2 s after the black picture arrived); then two windows of 1.2 s in a row of silence.
    await waitForAudioEnergyBelow(second, heard / 20);
    expect(await energyOver(1200)).toBeLessThan(heard / 20);

    await mic.click();
    await cam.click();
    expect(await mic.getAttribute('aria-pressed')).toBe('false');
    await brightness(30, 255);
    expect(await energyOver(1200)).toBeGreaterThan(heard / 20);
  });

  it('when the media between the two browsers fails, it is rebuilt within the same call', async () => {
    const { first, second } = await connectedPair();
    // The first person answered the offer; closing their RTCPeerConnection kills the media both ways.
    expect(await first.page.evaluate('window.__probe.closeAnswererConnection()')).toBe(true);
    await waitForStateSeen(second, 'reconnecting');
    await Promise.all([waitForCallState(first, 'connected'), waitForCallState(second, 'connected')]);
    await expectMediaFlowing(first);
    await expectMediaFlowing(second);
    for (const side of [first, second]) expect(await peerConnectionCount(side)).toEqual({ made: 2, open: 1 });
    expect(second.logs.join('\n')).toMatch(/offering again to/);
  });

  it('a call link that is not valid says so', async () => {
    const bad = await open(`${server.url}/c/${'x'.repeat(65)}`);
    await waitForCallState(bad, 'error');
    expect(await bad.page.getByRole('heading', { name: "This call link doesn't work" }).isVisible()).toBe(true);
  });
});
