// Realistic signals with a send timestamp embedded where a real one carries a number: the SDP
// session id (`o=- <ts> 2 IN IP4 …`) and the candidate foundation (`candidate:<ts> 1 udp …`).
// Timestamps are integer microseconds of the load generator's `performance.now()`, so the
// servers relay them untouched and the receiver finds them without parsing the JSON.

/** The placeholder each template carries where the timestamp goes. */
const TS = '@TS@';

/** A Chrome-like audio+video+data offer, about 3 KB. */
function sdp(setup) {
  const lines = [
    'v=0', `o=- ${TS} 2 IN IP4 127.0.0.1`, 's=-', 't=0 0',
    'a=group:BUNDLE 0 1 2', 'a=extmap-allow-mixed', 'a=msid-semantic: WMS 3f2b9c1e-7d4a-4c55-9a61-2b8e0d7c4f19',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=ice-ufrag:4ZcD', 'a=ice-pwd:2S7u7YqW3aLyG0o3Wm1k9Qx+', 'a=ice-options:trickle',
    'a=fingerprint:sha-256 7B:8E:3A:61:4F:D2:19:C0:AA:5E:13:77:0D:9B:C4:E8:21:6F:3B:92:58:E1:0A:D7:4C:86:F3:25:B9:1E:60:DA',
    `a=setup:${setup}`, 'a=mid:0',
    'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', 'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid',
    'a=sendrecv', 'a=msid:3f2b9c1e-7d4a-4c55-9a61-2b8e0d7c4f19 9d1c2e4b-55aa-4f0e-8c3d-6a7b8c9d0e1f', 'a=rtcp-mux',
    'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', 'a=fmtp:111 minptime=10;useinbandfec=1',
    'a=rtpmap:63 red/48000/2', 'a=fmtp:63 111/111', 'a=rtpmap:9 G722/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000',
    'a=rtpmap:13 CN/8000', 'a=rtpmap:110 telephone-event/48000', 'a=rtpmap:126 telephone-event/8000',
    'a=ssrc:1001876332 cname:q8Vt4mXc2ZbN7yKa', 'a=ssrc:1001876332 msid:3f2b9c1e-7d4a-4c55-9a61-2b8e0d7c4f19 9d1c2e4b-55aa-4f0e-8c3d-6a7b8c9d0e1f',
    'm=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=ice-ufrag:4ZcD', 'a=ice-pwd:2S7u7YqW3aLyG0o3Wm1k9Qx+', 'a=ice-options:trickle',
    'a=fingerprint:sha-256 7B:8E:3A:61:4F:D2:19:C0:AA:5E:13:77:0D:9B:C4:E8:21:6F:3B:92:58:E1:0A:D7:4C:86:F3:25:B9:1E:60:DA',
    `a=setup:${setup}`, 'a=mid:1',
    'a=extmap:14 urn:ietf:params:rtp-hdrext:toffset', 'a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'a=extmap:13 urn:3gpp:video-orientation', 'a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
    'a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay', 'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid',
    'a=sendrecv', 'a=msid:3f2b9c1e-7d4a-4c55-9a61-2b8e0d7c4f19 c2a1f0e3-8b7d-4e6f-9a5b-1c2d3e4f5a6b', 'a=rtcp-mux', 'a=rtcp-rsize',
    'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 goog-remb', 'a=rtcp-fb:96 transport-cc', 'a=rtcp-fb:96 ccm fir', 'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli',
    'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96',
    'a=rtpmap:102 H264/90000', 'a=rtcp-fb:102 transport-cc', 'a=rtcp-fb:102 nack pli',
    'a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f', 'a=rtpmap:103 rtx/90000', 'a=fmtp:103 apt=102',
    'a=rtpmap:104 H264/90000', 'a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f',
    'a=rtpmap:105 rtx/90000', 'a=fmtp:105 apt=104',
    'a=rtpmap:106 H264/90000', 'a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
    'a=rtpmap:107 rtx/90000', 'a=fmtp:107 apt=106',
    'a=rtpmap:108 VP9/90000', 'a=fmtp:108 profile-id=0', 'a=rtpmap:109 rtx/90000', 'a=fmtp:109 apt=108',
    'a=rtpmap:127 AV1/90000', 'a=rtpmap:125 rtx/90000', 'a=fmtp:125 apt=127',
    'a=rtpmap:39 red/90000', 'a=rtpmap:40 ulpfec/90000',
    'a=ssrc-group:FID 2231627014 632943048', 'a=ssrc:2231627014 cname:q8Vt4mXc2ZbN7yKa', 'a=ssrc:632943048 cname:q8Vt4mXc2ZbN7yKa',
    'm=application 9 UDP/DTLS/SCTP webrtc-datachannel', 'c=IN IP4 0.0.0.0',
    'a=ice-ufrag:4ZcD', 'a=ice-pwd:2S7u7YqW3aLyG0o3Wm1k9Qx+', 'a=ice-options:trickle',
    'a=fingerprint:sha-256 7B:8E:3A:61:4F:D2:19:C0:AA:5E:13:77:0D:9B:C4:E8:21:6F:3B:92:58:E1:0A:D7:4C:86:F3:25:B9:1E:60:DA',
    `a=setup:${setup}`, 'a=mid:2', 'a=sctp-port:5000', 'a=max-message-size:262144',
  ];
  return lines.join('\r\n') + '\r\n';
}

const CANDIDATE =
  `candidate:${TS} 1 udp 1686052607 203.0.113.45 61523 typ srflx raddr 192.168.1.23 rport 61523 generation 0 ufrag 4ZcD network-id 1 network-cost 10`;
const ICE = { candidate: CANDIDATE, sdpMid: '0', sdpMLineIndex: 0 };

/** A template split at the timestamp: frame = pre + ts + post. */
function split(obj) {
  const [pre, post] = JSON.stringify(obj).split(TS);
  return { pre, post };
}

/** Frames in our protocol (and the bare relays', which relay our protocol). */
export function ourTemplates() {
  return {
    offer: split({ type: 'offer', sdp: sdp('actpass') }),
    answer: split({ type: 'answer', sdp: sdp('active') }),
    candidate: split({ type: 'candidate', candidate: ICE }),
  };
}

/** Frames as the PeerJS 1.5 client sends them to `dst` (signaling-anchors §1.6). */
export function peerjsTemplates(dst, connectionId) {
  return {
    offer: split({ type: 'OFFER', payload: { sdp: { type: 'offer', sdp: sdp('actpass') }, type: 'media', connectionId, metadata: null }, dst }),
    answer: split({ type: 'ANSWER', payload: { sdp: { type: 'answer', sdp: sdp('active') }, type: 'media', connectionId }, dst }),
    candidate: split({ type: 'CANDIDATE', payload: { candidate: { ...ICE, usernameFragment: '4ZcD' }, type: 'media', connectionId }, dst }),
  };
}

const SDP_MARK = Buffer.from('o=- ');
const CAND_MARK = Buffer.from('"candidate:');
/** What a received frame is: 1 = SDP, 2 = candidate, 0 = anything else. */
export let lastKind = 0;

/** The embedded timestamp (µs) of a received frame, or -1 if it carries none; sets `lastKind`. */
export function readTimestamp(buf) {
  let i = buf.indexOf(SDP_MARK);
  if (i >= 0) { lastKind = 1; i += SDP_MARK.length; }
  else {
    i = buf.indexOf(CAND_MARK);
    if (i < 0) { lastKind = 0; return -1; }
    lastKind = 2; i += CAND_MARK.length;
  }
  let n = 0;
  for (let c = buf[i]; c >= 48 && c <= 57; c = buf[++i]) n = n * 10 + (c - 48);
  return n;
}
