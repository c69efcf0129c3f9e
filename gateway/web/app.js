// Parley demo client. It speaks only the documented protocol (docs/protocol.md)
// and the dev token endpoint (docs/http-api.md): plain JavaScript, no build step.
// All user text goes into the page through textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const ID_RE = /^[A-Za-z0-9._@+-]{1,64}$/;  // user and device ids
const MAX_BODY = 16 << 10;                    // bytes
const MAX_BATCH = 60 << 10;                   // bytes per websocket message (server limit: 64 KiB)
const TYPING_EVERY = 3000, TYPING_TTL = 6000; // ms
const CLOSE_NAMES = {
  1000: 'normal', 1001: 'going away', 1006: 'connection lost', 1009: 'message too big',
  4000: 'server shutdown', 4001: 'slow consumer', 4002: 'idle timeout', 4003: 'token expired',
  4004: 'server error', 4005: 'too many connections', 4006: 'rate limited',
  4500: 'unauthorized', 4501: 'forbidden', 4502: 'protocol error', 4503: 'bad subprotocol',
};
const enc = new TextEncoder();
const bytes = (s) => enc.encode(s).length;

const S = {
  me: '', device: '', token: '', tokenExp: 0, skew: 0,
  ws: null, open: false, stopped: true, attempt: 0, bye: null, helloAt: 0,
  lastRx: 0, heartbeat: 25000, reconnectTimer: 0, refreshTimer: 0, receiptTimer: 0,
  reqs: new Map(), nextReq: 1, outbox: [],
  convs: new Map(), current: null,
  presence: new Map(), watched: new Set(),
  typingConv: '', typingAt: 0,
};

// ---- conversations --------------------------------------------------------

// conv returns the local state of a conversation, creating it on first use.
// msgs holds messages by seq; synced is the seq up to which this device holds
// every message (its position for sync); pending holds unacked sends by cmid;
// marks holds the other members' receipt watermarks ({d, r} by user).
function conv(id) {
  let c = S.convs.get(id);
  if (!c) {
    c = {
      id, kind: id.startsWith('dm:') ? 'direct' : 'group', title: '', exists: false,
      msgs: new Map(), pending: new Map(), loaded: false, synced: 0, more: false,
      lastSeq: 0, readSeq: 0, unread: 0, last: null, members: new Set(),
      marks: new Map(), info: false, sentDelivered: 0, sentRead: 0, typing: new Map(),
    };
    if (c.kind === 'direct') id.split(':').slice(1).forEach((u) => c.members.add(u));
    S.convs.set(id, c);
  }
  return c;
}

const dmId = (a, b) => 'dm:' + (a < b ? a + ':' + b : b + ':' + a); // ids are ASCII: bytewise order
const peer = (c) => [...c.members].find((u) => u !== S.me) || S.me;
const nameOf = (c) => c.title || (c.kind === 'direct' ? peer(c) : c.id);
const maxSeq = (c) => Math.max(0, ...c.msgs.keys());
const activity = (c) => Math.max(c.last ? c.last.ts : 0, ...[...c.msgs.values()].map((m) => m.ts || 0));

function setUnread(c) { c.unread = Math.max(0, c.lastSeq - c.readSeq); }

// addMessage stores m once per (conv, seq) and advances the gap-free position.
function addMessage(m) {
  const c = conv(m.conv);
  c.exists = true;
  if (!c.msgs.has(m.seq)) {
    c.msgs.set(m.seq, m);
    if (m.from === S.me && m.cmid) c.pending.delete(m.cmid); // ours, seen via sync/history
    if (m.from && m.from !== S.me) {
      c.members.add(m.from);
      clearTimeout(c.typing.get(m.from));
      c.typing.delete(m.from);
      queueDelivered(c, m.seq);
    }
  }
  if (!c.last || m.seq > c.last.seq) c.last = m;
  c.lastSeq = Math.max(c.lastSeq, m.seq);
  if (c.loaded) while (c.msgs.has(c.synced + 1)) c.synced++;
  setUnread(c);
  return c;
}

// mark raises another member's receipt watermarks (read implies delivered).
function mark(c, user, delivered, read) {
  const m = c.marks.get(user) || { d: 0, r: 0 };
  m.r = Math.max(m.r, read || 0);
  m.d = Math.max(m.d, delivered || 0, m.r);
  c.marks.set(user, m);
}

// applyConv merges a conversation object from convs, create or the HTTP API.
// Only a full object (with members) replaces the member list.
function applyConv(x) {
  const c = conv(x.id);
  c.exists = true;
  c.kind = x.kind || c.kind;
  c.title = x.title || '';
  c.lastSeq = Math.max(c.lastSeq, x.last_seq || 0);
  c.readSeq = Math.max(c.readSeq, x.read_seq || 0);
  if (x.last && (!c.last || x.last.seq > c.last.seq)) c.last = x.last;
  if (x.members) {
    c.members = new Set(x.members.map((m) => m.user));
    for (const m of x.members) if (m.user !== S.me) mark(c, m.user, m.delivered_seq, m.read_seq);
  }
  setUnread(c);
  return c;
}

// ---- socket and framing ---------------------------------------------------

// send queues a frame; queued frames leave as one websocket message, '\n'-separated.
function send(frame) {
  if (!S.open) return false;
  S.outbox.push(JSON.stringify(frame));
  if (S.outbox.length === 1) queueMicrotask(flush);
  return true;
}

function flush() {
  let batch = [], size = 0;
  const out = () => { if (batch.length && S.ws) S.ws.send(batch.join('\n')); batch = []; size = 0; };
  for (const f of S.outbox.splice(0)) {
    const n = bytes(f) + 1;
    if (batch.length === 64 || size + n > MAX_BATCH) out();
    batch.push(f);
    size += n;
  }
  out();
}

// request sends a frame with a fresh id; cb gets the reply (ack, synced,
// result) or an error frame, or a local "disconnected" error.
function request(frame, cb) {
  const id = String(S.nextReq++);
  if (!send({ ...frame, id })) return false;
  S.reqs.set(id, cb);
  return true;
}

function connect() {
  clearTimeout(S.reconnectTimer);
  setConn('connecting…', 'wait');
  const url = location.origin.replace(/^http/, 'ws') + '/v1/ws';
  const ws = new WebSocket(url, ['parley.v1', 'parley.token.' + S.token]);
  S.ws = ws;
  ws.onopen = () => { S.open = true; S.lastRx = Date.now(); };
  ws.onmessage = (e) => {
    S.lastRx = Date.now();
    if (typeof e.data !== 'string') return; // v1 is text only
    for (const line of e.data.split('\n')) {
      if (!line) continue;
      try {
        const f = JSON.parse(line);
        if (handlers[f.type]) handlers[f.type](f); // unknown types are ignored
      } catch (err) { console.error('frame', line, err); }
    }
  };
  ws.onclose = (e) => { if (S.ws === ws) closed(e.code, e.reason); };
}

// drop abandons a socket that went quiet (half-open) without waiting for the
// browser's closing handshake.
function drop(reason) {
  const ws = S.ws;
  if (!ws) return;
  ws.onclose = null;
  ws.close(1000, reason);
  closed(1006, reason);
}

function closed(code, reason) {
  S.ws = null;
  S.open = false;
  S.outbox.length = 0;
  const reqs = [...S.reqs.values()];
  S.reqs.clear();
  reqs.forEach((cb) => cb({ type: 'error', code: 'disconnected', message: 'connection closed' }));
  S.convs.forEach((c) => { c.typing.forEach(clearTimeout); c.typing.clear(); });
  S.presence.clear(); // unknown until watched again after the next hello
  S.typingConv = '';
  render();
  if (S.stopped) return;
  if (S.helloAt && Date.now() - S.helloAt > 10000) S.attempt = 0; // it had been up for a while
  S.helloAt = 0;
  const what = `${code} ${CLOSE_NAMES[code] || ''}`.trim() + (reason ? ': ' + reason : '');
  if (code >= 4500 && code <= 4999) return stop(`Disconnected (${what}). Not reconnecting.`);
  let delay;
  if (S.bye) { delay = S.bye.reconnect_after_ms || 0; S.bye = null; } // already jittered by the server
  else delay = Math.random() * Math.min(30000, 500 * 2 ** S.attempt++); // full jitter
  setConn('offline', 'off');
  status(`Disconnected (${what}); reconnecting in ${(delay / 1000).toFixed(1)} s`, true);
  S.reconnectTimer = setTimeout(() => reconnect(code === 4003), delay);
}

async function reconnect(freshToken) {
  if (S.stopped) return;
  if (freshToken) {
    try { await mintToken(); } catch (err) { return closed(1006, 'token: ' + err.message); }
  }
  connect();
}

function stop(msg) {
  S.stopped = true;
  clearTimeout(S.reconnectTimer);
  clearTimeout(S.refreshTimer);
  setConn('offline', 'off');
  status(msg, true);
}

// Heartbeat watchdog: the server pings every heartbeat_ms; silence for two
// intervals means a dead link.
setInterval(() => {
  if (S.open && Date.now() - S.lastRx > 2 * S.heartbeat + 5000) drop('no heartbeat');
}, 5000);

// ---- tokens ---------------------------------------------------------------

async function mintToken() {
  const r = await fetch('/v1/dev/token', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: S.me, device: S.device }),
  });
  const j = await r.json().catch(() => ({}));
  if (r.status === 404) throw new Error('dev mode is off: this server only accepts real tokens');
  if (!r.ok) throw new Error(j.error ? `${j.error.code}: ${j.error.message}` : 'HTTP ' + r.status);
  S.token = j.token;
  S.tokenExp = j.exp;
}

// Refresh the token a minute before it expires, without reconnecting.
function scheduleRefresh() {
  clearTimeout(S.refreshTimer);
  const ms = S.tokenExp * 1000 - (Date.now() + S.skew) - 60000;
  S.refreshTimer = setTimeout(refreshToken, Math.min(Math.max(ms, 5000), 2 ** 31 - 1));
}

async function refreshToken() {
  if (S.tokenExp * 1000 - (Date.now() + S.skew) > 120000) return scheduleRefresh(); // woke early
  try { await mintToken(); } catch (err) { return status('Token refresh failed: ' + err.message, true); }
  request({ type: 'refresh', token: S.token }, (r) => {
    if (r.type === 'error') return r.code !== 'disconnected' && status(`refresh: ${r.code}`, true);
    S.tokenExp = r.token_exp;
    scheduleRefresh();
  });
}

// ---- server frames --------------------------------------------------------

function reply(f) {
  const cb = f.id && S.reqs.get(f.id);
  if (!cb) return false;
  S.reqs.delete(f.id);
  cb(f);
  return true;
}

const handlers = {
  hello(f) {
    S.me = f.user;
    S.device = f.device;
    S.tokenExp = f.token_exp;
    S.skew = (f.server_time || Date.now()) - Date.now();
    S.heartbeat = f.heartbeat_ms || 25000;
    S.helloAt = Date.now();
    $('who').textContent = `${S.me} · ${S.device}`;
    setConn('online', 'on');
    status('');
    scheduleRefresh();
    loadConvs();
    resync();
    S.convs.forEach((c) => c.pending.forEach((p) => { // same cmid: idempotent
      if (!p.state.startsWith('failed')) sendPending(c, p);
    }));
    if (!S.receiptTimer) S.receiptTimer = setTimeout(flushDelivered, 300);
    const users = [...S.watched];
    S.watched.clear();
    watch(users);
    if (S.current && S.current.exists && !S.current.loaded) loadHistory(S.current);
    S.convs.forEach((c) => { c.info = false; }); // receipts sent while away were missed
    if (S.current) loadInfo(S.current);
    render();
  },
  ack: reply,
  synced: reply,
  result: reply,
  error(f) { if (!reply(f)) status(`${f.code}: ${f.message}`, true); },
  message(f) {
    const known = S.convs.has(f.conv);
    const c = addMessage(f);
    if (!known) loadConvs(); // a new conversation: fetch its title and role
    if (!c.loaded && c === S.current) loadHistory(c); // an open draft came to life
    else if (c.loaded && f.seq > c.synced + 1) fillGap(c);
    markRead(c);
    render();
  },
  receipt(f) {
    const c = conv(f.conv);
    if (f.user === S.me) { // another of my devices
      if (f.kind === 'read') { c.readSeq = Math.max(c.readSeq, f.seq); c.sentRead = Math.max(c.sentRead, f.seq); }
      c.sentDelivered = Math.max(c.sentDelivered, f.seq);
      setUnread(c);
    } else {
      mark(c, f.user, f.seq, f.kind === 'read' ? f.seq : 0);
    }
    render();
  },
  typing(f) {
    if (f.user === S.me) return;
    const c = conv(f.conv);
    clearTimeout(c.typing.get(f.user));
    c.typing.delete(f.user);
    if (f.state === 'start') {
      c.typing.set(f.user, setTimeout(() => { c.typing.delete(f.user); renderTyping(); }, TYPING_TTL));
    }
    renderTyping();
  },
  presence(f) { S.presence.set(f.user, f); render(); },
  member(f) {
    const c = conv(f.conv);
    const users = f.users || [];
    c.exists = true;
    if (f.title !== undefined) c.title = f.title;
    if (f.action === 'created' || f.action === 'added') users.forEach((u) => c.members.add(u));
    if (f.action === 'removed' || f.action === 'left') {
      if (users.includes(S.me)) {
        S.convs.delete(c.id);
        if (S.current === c) S.current = null;
        status(f.action === 'left' ? `You left ${nameOf(c)}` : `You were removed from ${nameOf(c)}`);
      } else users.forEach((u) => { c.members.delete(u); c.marks.delete(u); });
    }
    if (f.action === 'created' || f.action === 'added') loadConvs(); // role, title, last
    if (S.current === c) watch([...c.members]);
    render();
  },
  event() {}, // live topics are not used by this page
  ping() { send({ type: 'pong' }); },
  pong() {},
  bye(f) {
    S.bye = f;
    status(`Server going away (${f.reason}); reconnecting in ${((f.reconnect_after_ms || 0) / 1000).toFixed(1)} s`);
  },
};

// ---- requests -------------------------------------------------------------

function loadConvs() {
  request({ type: 'convs' }, (r) => {
    if (r.type === 'error') return r.code !== 'disconnected' && status(`convs: ${r.code}`, true);
    const peers = [];
    for (const x of r.convs || []) {
      const c = applyConv(x);
      if (c.kind === 'direct') peers.push(peer(c));
      // The list shows the newest message, so it has reached this device.
      if (x.last && x.last.from && x.last.from !== S.me) queueDelivered(c, x.last.seq);
    }
    watch(peers);
    render();
  });
}

// resync catches up every conversation this device has opened, from its
// gap-free position; the others come back as state only (unread counts).
function resync() {
  const since = {};
  S.convs.forEach((c) => { if (c.loaded && c.exists) since[c.id] = c.synced; });
  if (Object.keys(since).length) syncRound(since, 0);
}

function syncRound(since, round) {
  request({ type: 'sync', since, limit: 200 }, (r) => {
    if (r.type !== 'synced') return r.code !== 'disconnected' && status(`sync: ${r.code}`, true);
    const next = {};
    let again = !!r.more;
    for (const sc of r.convs || []) {
      const c = conv(sc.conv);
      c.exists = true;
      (sc.messages || []).forEach(addMessage);
      c.lastSeq = Math.max(c.lastSeq, sc.last_seq);
      c.readSeq = Math.max(c.readSeq, sc.read_seq || 0);
      c.sentDelivered = Math.max(c.sentDelivered, sc.delivered_seq || 0);
      setUnread(c);
      if (sc.more) again = true;
      // Listed: continue from where we are. Not listed: we only wanted its state.
      next[sc.conv] = sc.conv in since ? c.synced : sc.last_seq;
    }
    for (const id in since) if (!(id in next)) next[id] = since[id];
    if (!r.convs || !r.convs.length) again = false;
    if (again && round < 50) syncRound(next, round + 1);
    else if (again) status('sync: too many rounds, giving up', true);
    markRead(S.current);
    render();
  });
}

// loadHistory fetches the newest page, or with older=true the page before
// the oldest message held.
function loadHistory(c, older) {
  const f = { type: 'history', conv: c.id, limit: 50 };
  if (older) f.before = Math.min(...c.msgs.keys());
  else if (c.loading) return;
  const sent = request(f, (r) => {
    if (!older) c.loading = false;
    if (r.type === 'error') return r.code !== 'disconnected' && status(`history: ${r.code}`, true);
    const ms = r.messages || [];
    if (!older) {
      c.loaded = true;
      c.synced = Math.max(c.synced, ms.length ? ms[ms.length - 1].seq : 0);
    }
    c.more = !!r.more; // older messages remain before this page
    ms.forEach(addMessage);
    if (c.synced < maxSeq(c)) fillGap(c); // live messages arrived after the page
    markRead(c);
    render();
  });
  if (sent && !older) c.loading = true;
}

// fillGap fetches the messages between the gap-free position and newer
// messages that arrived live.
function fillGap(c) {
  if (c.filling || !c.synced) return; // after 0 would mean "the newest page"
  c.filling = true;
  const ok = request({ type: 'history', conv: c.id, after: c.synced, limit: 200 }, (r) => {
    c.filling = false;
    const ms = (r.type === 'result' && r.messages) || [];
    ms.forEach(addMessage);
    if (ms.length && c.synced < maxSeq(c)) fillGap(c);
    render();
  });
  if (!ok) c.filling = false;
}

// loadInfo fetches the conversation with its members and their receipt
// watermarks (HTTP GET /v1/conversations/{id}). Receipts are live traffic:
// after a reload or a reconnect this is how the page learns what the others
// got and read while it was away, and a group's member list.
async function loadInfo(c) {
  if (!c.exists || c.infoLoading || !S.token) return;
  c.infoLoading = true;
  try {
    const r = await fetch('/v1/conversations/' + c.id, { headers: { Authorization: 'Bearer ' + S.token } });
    const j = await r.json().catch(() => ({}));
    if (r.ok && j.id === c.id && S.convs.get(c.id) === c) {
      applyConv(j);
      c.info = true;
      if (S.current === c) watch([...c.members]);
    } else if (!r.ok && r.status !== 404 && r.status !== 403) {
      status(`conversation: ${j.error ? j.error.code : 'HTTP ' + r.status}`, true);
    }
  } catch (err) {
    // offline: fetched again after the next hello
  } finally {
    c.infoLoading = false;
  }
  render();
}

function watch(users) {
  const fresh = [...new Set(users)].filter((u) => u !== S.me && !S.watched.has(u));
  const room = 1000 - S.watched.size;
  if (!fresh.length || room <= 0) return;
  const batch = fresh.slice(0, room);
  batch.forEach((u) => S.watched.add(u));
  const sent = request({ type: 'watch', users: batch }, (r) => {
    if (r.type === 'error') {
      if (r.code !== 'disconnected') batch.forEach((u) => S.watched.delete(u)); // else: re-watched after hello
      return;
    }
    (r.presence || []).forEach((p) => S.presence.set(p.user, p));
    render();
  });
  if (!sent) batch.forEach((u) => S.watched.delete(u)); // watched again after hello
}

function sendPending(c, p) {
  const f = { type: 'send', cmid: p.cmid, body: p.body };
  if (c.exists) f.conv = c.id; else f.to = peer(c);
  p.state = 'sending';
  request(f, (r) => {
    if (r.type === 'ack') {
      c.pending.delete(p.cmid);
      const t = addMessage({ conv: r.conv, seq: r.seq, from: S.me, device: S.device, cmid: p.cmid, body: p.body, ts: r.ts });
      if (!t.loaded) loadHistory(t); // a new 1:1 conversation, or one not opened yet
      if (!t.info) loadInfo(t);
      markRead(t);
    } else if (r.code === 'disconnected' || r.code === 'draining') {
      // resent after the next hello
    } else if (['rate_limited', 'unavailable', 'internal'].includes(r.code)) {
      setTimeout(() => { if (c.pending.get(p.cmid) === p && S.open) sendPending(c, p); }, r.retry_after_ms || 2000);
    } else {
      p.state = 'failed: ' + r.code;
    }
    render();
  });
}

function queueDelivered(c, seq) {
  c.wantDelivered = Math.max(c.wantDelivered || 0, seq);
  if (!S.receiptTimer) S.receiptTimer = setTimeout(flushDelivered, 300);
}

function flushDelivered() {
  S.receiptTimer = 0;
  S.convs.forEach((c) => {
    if (c.wantDelivered > c.sentDelivered && send({ type: 'receipt', conv: c.id, kind: 'delivered', seq: c.wantDelivered })) {
      c.sentDelivered = c.wantDelivered;
    }
  });
}

// markRead sends a read receipt when the conversation is on screen.
function markRead(c) {
  if (!c || c !== S.current || document.visibilityState !== 'visible' || !c.exists) return;
  const top = maxSeq(c);
  if (top > c.readSeq && top > c.sentRead && send({ type: 'receipt', conv: c.id, kind: 'read', seq: top })) {
    c.sentRead = top;
    c.sentDelivered = Math.max(c.sentDelivered, top);
    c.readSeq = top;
    setUnread(c);
  }
}

function stopTyping() {
  if (S.typingConv) send({ type: 'typing', conv: S.typingConv, state: 'stop' });
  S.typingConv = '';
  S.typingAt = 0;
}

function newCmid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// ---- rendering ------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function status(msg, error) {
  $('status').textContent = msg;
  $('status').classList.toggle('error', !!error);
}

function setConn(text, cls) {
  $('conn').textContent = text;
  $('conn').className = 'conn ' + cls;
}

const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function presenceText(u) {
  const p = S.presence.get(u);
  if (!p) return '';
  if (p.online) return 'online';
  return p.last_seen ? 'last seen ' + new Date(p.last_seen).toLocaleString() : 'offline';
}

function dot(u) {
  const p = S.presence.get(u);
  return el('span', 'dot' + (p && p.online ? ' online' : ''));
}

function render() { renderList(); renderChat(); }

function renderList() {
  const list = [...S.convs.values()].sort((a, b) => activity(b) - activity(a));
  let total = 0;
  $('convs').replaceChildren(...list.map((c) => {
    const li = el('li', c === S.current ? 'current' : '');
    if (c.kind === 'direct') li.append(dot(peer(c)));
    const text = el('span', 'text');
    text.append(el('span', 'name', nameOf(c)));
    if (c.last) text.append(el('span', 'preview', (c.last.from === S.me ? 'you: ' : '') + (c.last.body || '')));
    li.append(text);
    if (c.unread > 0 && c !== S.current) { total += c.unread; li.append(el('span', 'badge', String(c.unread))); }
    li.addEventListener('click', () => select(c));
    return li;
  }));
  document.title = (total ? `(${total}) ` : '') + 'Parley demo';
}

// stateOf tells how far one of my messages got: [css class, label]. In a
// group it is read (delivered) once every other member read (got) it.
function stateOf(c, m) {
  const others = [...c.members].filter((u) => u !== S.me);
  let d = 0, r = 0;
  for (const u of others) {
    const w = c.marks.get(u);
    if (w && w.r >= m.seq) r++;
    if (w && w.d >= m.seq) d++;
  }
  const n = others.length;
  if (n && r === n) return ['read', 'read'];
  if (n > 1 && r) return ['delivered', `read by ${r} of ${n}`];
  if (n && d === n) return ['delivered', 'delivered'];
  if (n > 1 && d) return ['sent', `delivered to ${d} of ${n}`];
  return ['sent', 'sent'];
}

function msgEl(c, m, pending) {
  const li = el('li', 'msg' + (m.kind === 'system' ? ' system' : m.from === S.me ? ' mine' : ''));
  const meta = el('div', 'meta');
  if (m.kind !== 'system') meta.append(el('span', '', m.from === S.me ? 'you' : m.from));
  if (m.ts) meta.append(el('span', '', clock(m.ts)));
  if (pending) {
    const st = el('span', 'state' + (pending.state.startsWith('failed') ? ' failed' : ''), pending.state);
    if (pending.state.startsWith('failed')) {
      st.title = 'Click to retry';
      st.addEventListener('click', () => { sendPending(c, pending); render(); });
    }
    meta.append(st);
  } else if (m.from === S.me && m.kind !== 'system') {
    const [cls, label] = stateOf(c, m);
    meta.append(el('span', 'state ' + cls, label));
  }
  li.append(meta, el('div', 'body', m.body || (m.meta ? JSON.stringify(m.meta) : '')));
  return li;
}

function renderChat() {
  const c = S.current;
  const on = !!c && !S.stopped;
  $('text').disabled = $('send').disabled = !on;
  $('chat-title').textContent = c ? nameOf(c) : 'Pick or start a conversation';
  $('chat-presence').replaceChildren(...(c ? [...c.members].filter((u) => u !== S.me) : []).map((u) => {
    const s = el('span');
    s.append(dot(u), document.createTextNode(c.kind === 'direct' ? presenceText(u) || u : u));
    return s;
  }));
  $('older').hidden = !(c && c.more);
  const box = $('scroller');
  const switched = S.shown !== c;
  S.shown = c;
  const fromBottom = box.scrollHeight - box.scrollTop; // keep the view steady while the list changes
  const items = [];
  if (c) {
    [...c.msgs.values()].sort((a, b) => a.seq - b.seq).forEach((m) => items.push(msgEl(c, m)));
    c.pending.forEach((p) => items.push(msgEl(c, { from: S.me, body: p.body }, p)));
  }
  $('messages').replaceChildren(...items);
  box.scrollTop = switched ? box.scrollHeight : box.scrollHeight - fromBottom;
  renderTyping();
}

function renderTyping() {
  const c = S.current;
  const who = c ? [...c.typing.keys()] : [];
  $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---- user actions ---------------------------------------------------------

function select(c) {
  if (S.current !== c) stopTyping();
  S.current = c;
  if (c.exists && !c.loaded) loadHistory(c);
  if (c.exists && !c.info) loadInfo(c);
  watch([...c.members]);
  markRead(c);
  render();
  $('text').focus();
}

$('device').value = sessionStorage.getItem('parley.device') ||
  'browser-' + Math.random().toString(36).slice(2, 8);
$('user').value = sessionStorage.getItem('parley.user') || '';

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const user = $('user').value.trim(), device = $('device').value.trim();
  if (!ID_RE.test(user) || !ID_RE.test(device)) return status('Names: 1-64 characters of A-Z a-z 0-9 . _ @ + -', true);
  S.me = user;
  S.device = device;
  try { await mintToken(); } catch (err) { return status(err.message, true); }
  sessionStorage.setItem('parley.user', user);
  sessionStorage.setItem('parley.device', device);
  sessionStorage.setItem('parley.auto', '1'); // a reload of this tab connects again
  S.stopped = false;
  S.attempt = 0;
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  connect();
});

$('logout').addEventListener('click', () => {
  S.stopped = true;
  sessionStorage.removeItem('parley.auto');
  if (S.ws) S.ws.close(1000, 'logout');
  location.reload();
});

$('dm-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const u = $('dm-user').value.trim();
  if (!ID_RE.test(u)) return status('Not a valid user name', true);
  if (u === S.me) return status('That is you: pick someone else to chat with', true);
  $('dm-user').value = '';
  select(conv(dmId(S.me, u))); // a draft until the first message creates it
});

$('group-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const title = $('group-title').value.trim();
  const members = $('group-members').value.split(/[\s,]+/).filter(Boolean);
  const bad = members.find((u) => !ID_RE.test(u));
  if (bad) return status(`Not a valid user name: ${bad}`, true);
  if (bytes(title) > 256) return status('Title too long', true);
  const ok = request({ type: 'create', title, members }, (r) => {
    if (r.type === 'error') return status(`create: ${r.code}: ${r.message || ''}`, true);
    const x = typeof r.conv === 'string' ? { id: r.conv, title } : r.conv;
    const c = applyConv(x);
    c.loaded = true; // new: nothing to fetch
    c.info = !!x.members;
    members.forEach((u) => c.members.add(u));
    c.members.add(S.me);
    $('group-title').value = $('group-members').value = '';
    select(c);
  });
  if (!ok) status('Not connected', true);
});

$('reload').addEventListener('click', loadConvs);
$('older').addEventListener('click', () => S.current && loadHistory(S.current, true));

$('send-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const c = S.current, body = $('text').value;
  if (!c || !body.trim()) return;
  if (bytes(body) > MAX_BODY) return status('Message too long (16 KiB at most)', true);
  stopTyping();
  const p = { cmid: newCmid(), body, state: 'sending' };
  c.pending.set(p.cmid, p);
  $('text').value = '';
  sendPending(c, p); // when offline it waits for the next hello
  render();
});

$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('send-form').requestSubmit(); }
});

$('text').addEventListener('input', () => {
  const c = S.current;
  if (!c || !c.exists) return;
  if (!$('text').value) return stopTyping();
  const now = Date.now();
  if ((S.typingConv !== c.id || now - S.typingAt >= TYPING_EVERY) && send({ type: 'typing', conv: c.id, state: 'start' })) {
    S.typingConv = c.id;
    S.typingAt = now;
  }
});
$('text').addEventListener('blur', stopTyping);

// A reload (or a restored tab) picks up where it was: same user, same device.
if (sessionStorage.getItem('parley.auto') && $('user').value) $('login').requestSubmit();

document.addEventListener('visibilitychange', () => { markRead(S.current); render(); });
window.addEventListener('focus', () => markRead(S.current));
