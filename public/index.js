/**
 * The home page: one button that creates a call (POST /api/calls) and opens its page.
 * A `?ws=` list on this page is passed on to the call page (see call.js).
 */
const start = document.getElementById('start');
const status = document.getElementById('home-status');

async function startCall() {
  start.disabled = true;
  status.textContent = 'Creating your call…';
  try {
    const res = await fetch('/api/calls', { method: 'POST', headers: { accept: 'application/json' } });
    if (res.status !== 201) throw new Error(`the server answered ${res.status}`);
    const { callId } = await res.json();
    if (typeof callId !== 'string' || !callId) throw new Error('the server sent no call id');
    status.textContent = 'Opening your call…';
    location.assign(`/c/${encodeURIComponent(callId)}${location.search}`);
  } catch (err) {
    console.warn('[callsig] could not create a call:', err);
    status.textContent = navigator.onLine === false
      ? "You're offline. Connect to the internet, then try again."
      : "Couldn't create a call. The server may be starting up, which can take up to a minute: try again in a moment.";
    start.disabled = false;
    start.textContent = 'Try again';
    start.focus();
  }
}

start.addEventListener('click', startCall);
