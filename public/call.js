/**
 * The call page (/c/<callId>): the camera preview, the link to send, the other person's video,
 * the controls, and a status line that says what is happening in words a person can act on.
 * The call itself is run by CallClient (client.js); this file only shows it.
 *
 * `?ws=<url>,<url>` (optional) lists WebSocket base URLs of the same deployment to connect to,
 * in order, moving to the next on each drop (see client.js `servers`). Only URLs on this page's
 * own host name are taken, so a link cannot point the page at somebody else's server.
 */
import { CallClient, CALL_ID, sameOriginServer } from '/client.js';

const $ = (id) => document.getElementById(id);
const el = {
  status: $('status'),
  retryNow: $('retry-now'),
  remotes: $('remotes'),
  placeholder: $('placeholder'),
  placeholderText: $('placeholder-text'),
  localVideo: $('local-video'),
  selfOff: $('self-off'),
  invite: $('invite'),
  link: $('call-link'),
  copy: $('copy'),
  share: $('share'),
  copyFeedback: $('copy-feedback'),
  notice: $('media-notice'),
  noticeText: $('media-notice-text'),
  reload: $('reload'),
  dismissNotice: $('dismiss-notice'),
  unmuteRemote: $('unmute-remote'),
  endPanel: $('end-panel'),
  endTitle: $('end-title'),
  endText: $('end-text'),
  rejoin: $('rejoin'),
  controls: $('controls'),
  mic: $('mic'),
  micLabel: $('mic-label'),
  cam: $('cam'),
  camLabel: $('cam-label'),
  hangup: $('hangup'),
};

const callId = decodeURIComponent(location.pathname.replace(/^\/c\//, '').replace(/\/+$/, ''));
const callLink = `${location.origin}/c/${encodeURIComponent(callId)}`;

/** @type {CallClient | null} */
let client = null;
/** @type {MediaStream | null} */
let localStream = null;
/** What is wrong with the camera or microphone, in words, or ''. */
let mediaProblem = '';
/** Why the last person left ('hangup', 'timeout'), until someone joins. */
let lastLeft = '';
/** True once the person has dismissed the camera notice. */
let noticeDismissed = false;
/** Remote videos by peer id. */
const remoteViews = new Map();

/** The servers to use: `?ws=` entries on this page's host name, else this page's own origin. */
function serverList() {
  const param = new URLSearchParams(location.search).get('ws');
  if (!param) return [sameOriginServer()];
  const servers = [];
  for (const entry of param.split(',')) {
    try {
      const url = new URL(entry.trim());
      const schemeOk = url.protocol === 'wss:' || (url.protocol === 'ws:' && location.protocol === 'http:');
      if (schemeOk && url.hostname === location.hostname) servers.push(`${url.protocol}//${url.host}`);
      else console.warn(`[callsig] ignoring ?ws= entry ${entry}: only ws(s) URLs on ${location.hostname} are used`);
    } catch {
      console.warn(`[callsig] ignoring ?ws= entry that is not a URL: ${entry}`);
    }
  }
  return servers.length ? servers : [sameOriginServer()];
}

// Camera and microphone -----------------------------------------------------------------------------

const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'user' };

function problemKind(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') return 'blocked';
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') return 'missing';
  if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') return 'busy';
  return 'failed';
}

/** What to tell the person when they join without a camera, a microphone, or both. */
function describeProblem(kind, without) {
  const what = { both: 'camera and microphone', camera: 'camera', microphone: 'microphone' }[without];
  const effect = {
    both: "The other person won't see or hear you, but you can still see and hear them.",
    camera: "You're joining with sound only.",
    microphone: "The other person will see you but won't hear you.",
  }[without];
  switch (kind) {
    case 'insecure':
      return `This page isn't on a secure (https) connection, so your browser won't share your camera or microphone. ${effect.replace("You're joining with sound only.", '')}`.trim();
    case 'blocked':
      return `Your browser is blocking your ${what}. ${effect} To fix it, allow the ${what} for this site (look for the camera icon in the address bar), then reload the page.`;
    case 'missing':
      return `No ${what} found. ${effect} Plug one in and reload the page to use it.`;
    case 'busy':
      return `Your ${what} is in use by another app or tab. ${effect} Close the other app, then reload the page.`;
    default:
      return `Your ${what} could not be started. ${effect} Reload the page to try again.`;
  }
}

/** Asks for camera and microphone; joins with whatever works (or to receive only). */
async function getLocalMedia() {
  const md = navigator.mediaDevices;
  if (!md || typeof md.getUserMedia !== 'function') return { stream: null, problem: describeProblem('insecure', 'both') };
  let first;
  try {
    return { stream: await md.getUserMedia({ audio: AUDIO, video: VIDEO }), problem: '' };
  } catch (err) {
    first = err;
  }
  for (const [constraints, without] of [[{ audio: AUDIO }, 'camera'], [{ video: VIDEO }, 'microphone']]) {
    try {
      const stream = await md.getUserMedia(constraints);
      return { stream, problem: describeProblem(problemKind(first), without) };
    } catch {
      // try the other one
    }
  }
  return { stream: null, problem: describeProblem(problemKind(first), 'both') };
}

// What the page says --------------------------------------------------------------------------------

const END_TEXT = {
  hangup: ['You left the call', 'Rejoin with the same link, or start a new call.'],
  'call-ended': ['This call has ended', 'It was ended for everyone. Start a new call to talk again.'],
  full: ['This call is full', 'It already has as many people as it can hold, so you could not join. Ask for a new link, or start your own call and send its link.'],
  'invalid-call-id': ["This call link doesn't work", 'Check that you copied the whole link, or start a new call.'],
  unauthorized: ["You can't join this call from here", 'The server refused the connection. Ask the person who sent the link for a new one.'],
  'no-webrtc': ["This browser can't make video calls", 'Open the link in a recent Chrome, Firefox, Safari or Edge.'],
  'no-simple-peer': ["The page didn't load completely", 'Reload the page to try again.'],
};

function statusText(state, reason) {
  const alone = remoteViews.size === 0;
  switch (state) {
    case 'idle':
      return 'Getting your camera and microphone ready. If your browser asks, allow them.';
    case 'connecting':
      if (reason === 'retrying') return "Can't reach the server yet. It may be starting up, which can take up to a minute. Trying again…";
      if (reason === 'negotiating') return 'The other person is here. Connecting you…';
      return 'Joining the call…';
    case 'waiting':
      if (lastLeft === 'hangup') return "The other person hung up. You're still in the call: send the link to talk again.";
      if (lastLeft === 'timeout') return "The other person's connection dropped. They can come back with the same link.";
      return 'Waiting for the other person. Send them the link.';
    case 'connected':
      return 'Connected.';
    case 'reconnecting':
      if (reason === 'media') return 'The connection to the other person was interrupted. Reconnecting…';
      if (client && client.mediaConnected) return 'Lost touch with the server; your call continues. Reconnecting…';
      return alone
        ? 'Connection lost. Reconnecting… Check your internet connection.'
        : 'Connection lost. Reconnecting…';
    case 'ended':
      return reason === 'call-ended' ? 'The call has ended.' : 'You left the call.';
    case 'full':
      return 'This call is full.';
    case 'error':
      return (END_TEXT[reason] ?? ['Something went wrong.'])[0] + '.';
    default:
      return '';
  }
}

function placeholderText(state, reason) {
  if (state === 'waiting') return 'Nobody else is here yet. Send them the link.';
  if (state === 'connecting' && reason === 'negotiating') return 'Connecting…';
  if (state === 'reconnecting') return 'Reconnecting…';
  if (state === 'connected') return "You're connected, but they aren't sharing a camera or microphone.";
  return 'Nobody else is here yet.';
}

/** Shows the call state: body[data-call-state], the status line, and which panels are visible. */
function render() {
  const state = client ? client.state : document.body.dataset.callState || 'idle';
  const reason = client ? client.reason : '';
  document.body.dataset.callState = state;
  document.body.dataset.callReason = reason;
  const text = statusText(state, reason);
  if (el.status.textContent !== text) el.status.textContent = text;
  document.title = `${{ connected: 'In call', waiting: 'Waiting', reconnecting: 'Reconnecting', ended: 'Call ended', full: 'Call full', error: 'Link problem' }[state] ?? 'Joining'} · callsig`;

  const finished = state === 'ended' || state === 'full' || state === 'error';
  el.invite.hidden = finished || !(state === 'waiting' || state === 'idle' || (state === 'connecting' && reason !== 'negotiating'));
  el.retryNow.hidden = !(client && client.retryAt);
  el.placeholderText.textContent = placeholderText(state, reason);
  el.placeholder.hidden = remoteViews.size > 0;
  el.remotes.dataset.count = String(remoteViews.size);
  el.controls.hidden = finished;
  el.endPanel.hidden = !finished;
  el.notice.hidden = !mediaProblem || noticeDismissed || finished;
  if (finished) {
    const [title, body] = END_TEXT[state === 'full' ? 'full' : reason] ?? ['Something went wrong', 'Reload the page to try again.'];
    el.endTitle.textContent = title;
    el.endText.textContent = body;
    el.rejoin.hidden = !(state === 'ended' && reason === 'hangup');
    el.unmuteRemote.hidden = true;
  }
}

// Remote video ---------------------------------------------------------------------------------------

function showRemote(peerId, stream) {
  let view = remoteViews.get(peerId);
  if (!view) {
    const figure = document.createElement('figure');
    figure.className = 'remote';
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute('aria-label', "The other person's video");
    const caption = document.createElement('figcaption');
    caption.textContent = 'Them';
    figure.append(video, caption);
    el.remotes.append(figure);
    view = { figure, video };
    remoteViews.set(peerId, view);
  }
  view.figure.classList.toggle('audio-only', stream.getVideoTracks().length === 0);
  stream.addEventListener('addtrack', () => view.figure.classList.toggle('audio-only', stream.getVideoTracks().length === 0));
  view.video.srcObject = stream;
  playWithSound(view.video);
  render();
}

/** Plays with sound; where the browser's autoplay rules refuse, plays muted and offers a button. */
function playWithSound(video) {
  video.muted = false;
  video.play().catch(() => {
    video.muted = true;
    video.play().catch(() => {});
    el.unmuteRemote.hidden = false;
  });
}

function removeRemote(peerId) {
  const view = remoteViews.get(peerId);
  if (!view) return;
  view.video.srcObject = null;
  view.figure.remove();
  remoteViews.delete(peerId);
  render();
}

// Controls -------------------------------------------------------------------------------------------

function setupControls() {
  const audio = localStream ? localStream.getAudioTracks() : [];
  const video = localStream ? localStream.getVideoTracks() : [];
  el.mic.disabled = audio.length === 0;
  el.cam.disabled = video.length === 0;
  if (!audio.length) el.micLabel.textContent = 'No microphone';
  if (!video.length) {
    el.camLabel.textContent = 'No camera';
    el.selfOff.textContent = mediaProblem ? 'No camera' : 'Your camera is off';
    el.selfOff.hidden = false;
  }
  el.mic.addEventListener('click', () => {
    const muted = el.mic.getAttribute('aria-pressed') !== 'true';
    for (const t of audio) t.enabled = !muted;
    el.mic.setAttribute('aria-pressed', String(muted));
  });
  el.cam.addEventListener('click', () => {
    const off = el.cam.getAttribute('aria-pressed') !== 'true';
    for (const t of video) t.enabled = !off;
    el.cam.setAttribute('aria-pressed', String(off));
    el.selfOff.hidden = !off;
  });
  el.hangup.addEventListener('click', () => {
    if (client) client.hangUp();
    stopLocalMedia();
    render();
    el.endPanel.querySelector('a')?.focus();
  });
}

function stopLocalMedia() {
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  el.localVideo.srcObject = null;
}

async function copyLink() {
  let ok = false;
  try {
    await navigator.clipboard.writeText(callLink);
    ok = true;
  } catch {
    el.link.focus();
    el.link.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
  }
  el.copy.textContent = ok ? 'Copied!' : 'Copy link';
  el.copyFeedback.textContent = ok ? 'Link copied. Paste it into a message to the other person.' : 'Could not copy; the link is selected, copy it yourself.';
  if (ok) setTimeout(() => { el.copy.textContent = 'Copy link'; }, 2500);
}

function setupInvite() {
  el.link.value = callLink;
  el.link.addEventListener('focus', () => el.link.select());
  el.copy.addEventListener('click', copyLink);
  if (typeof navigator.share === 'function') {
    el.share.hidden = false;
    el.share.addEventListener('click', () => {
      navigator.share({ title: 'Join my call', text: 'Join my video call:', url: callLink }).catch(() => {});
    });
  }
}

// Start ---------------------------------------------------------------------------------------------

async function main() {
  setupInvite();
  el.reload.addEventListener('click', () => location.reload());
  el.dismissNotice.addEventListener('click', () => {
    noticeDismissed = true;
    render();
    (el.invite.hidden ? el.controls : el.copy).focus();
  });
  el.rejoin.href = location.href;
  el.unmuteRemote.addEventListener('click', () => {
    for (const { video } of remoteViews.values()) {
      video.muted = false;
      video.play().catch(() => {});
    }
    el.unmuteRemote.hidden = true;
  });
  el.retryNow.addEventListener('click', () => client && client.reconnectNow());

  if (!CALL_ID.test(callId)) {
    document.body.dataset.callState = 'error';
    client = null;
    el.status.textContent = statusText('error', 'invalid-call-id');
    showFinishedWithoutClient('invalid-call-id');
    return;
  }

  const media = await getLocalMedia();
  localStream = media.stream;
  mediaProblem = media.problem;
  el.noticeText.textContent = mediaProblem;
  if (localStream && localStream.getVideoTracks().length) el.localVideo.srcObject = localStream;
  setupControls();

  client = new CallClient({ callId, stream: localStream, servers: serverList() });
  client.addEventListener('statechange', (e) => {
    console.info(`[callsig] state ${e.detail.state} (${e.detail.reason})`);
    if (e.detail.state === 'ended' || e.detail.state === 'full' || e.detail.state === 'error') stopLocalMedia();
    render();
  });
  client.addEventListener('log', (e) => console.info(`[callsig] ${e.detail.message}`));
  client.addEventListener('remotestream', (e) => showRemote(e.detail.peerId, e.detail.stream));
  client.addEventListener('remotestreamended', (e) => removeRemote(e.detail.peerId));
  client.addEventListener('peerleft', (e) => {
    lastLeft = e.detail.reason;
    removeRemote(e.detail.peerId);
  });
  client.addEventListener('peerjoined', () => {
    lastLeft = '';
  });
  client.addEventListener('retry', render);
  addEventListener('pagehide', () => client && client.hangUp());
  client.join();
  render();
}

function showFinishedWithoutClient(reason) {
  const [title, body] = END_TEXT[reason];
  el.endTitle.textContent = title;
  el.endText.textContent = body;
  el.rejoin.hidden = true;
  el.endPanel.hidden = false;
  el.controls.hidden = true;
  el.invite.hidden = true;
  document.title = 'Link problem · callsig';
}

main().catch((err) => {
  console.error(err);
  document.body.dataset.callState = 'error';
  el.status.textContent = 'Something went wrong on this page. Reload it to try again.';
});
