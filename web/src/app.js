// kez-chat in the browser: the page's behaviour. Plain DOM; every piece of
// text that came from the network or a person is set with textContent, never
// parsed as HTML.
import * as api from './api.js';
import { openDB } from './db.js';
import { Live } from './live.js';
import { EnvelopeError, fingerprint, keyFile, newIdentity, openStored, parseKeyFile, seal, validHandle, hex } from './envelope.js';

// The envelope code, for the browser tests that check it against the Go
// package's vectors.
export * as envelope from './envelope.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
};

const state = {
  db: null,
  me: null, // identity; me.secrets only until the page is left
  live: null,
  cursor: 0,
  current: '', // the open conversation's handle
  keys: new Map(), // handle -> {signing_key, at}: registry answers, briefly cached
  channel: null,
};

const KEY_TTL = 60000;

// ---- errors

function showError(err) {
  const p = $('error');
  if (!err) {
    p.hidden = true;
    p.textContent = '';
    return;
  }
  p.textContent = api.words(err);
  p.hidden = false;
}

// ---- status

const STATUS_TEXT = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' };

function setStatus(s, detail) {
  const p = $('status');
  p.dataset.status = s;
  $('status-text').textContent = STATUS_TEXT[s] + (detail ? ` — ${detail}` : '');
  if (s === 'live') retryPending();
}

// ---- identity

async function createIdentity(handle) {
  const id = await newIdentity(handle);
  await api.register(id);
  await state.db.saveIdentity(id);
  start(id, `Save your key file now. This browser keeps your keys so that no page script can read them, so later it cannot export them. With the file you can use ${handle} with the kez CLI or in another browser.`);
}

async function importIdentity(file) {
  const id = await parseKeyFile(await file.text());
  const reg = await api.lookup(id.handle);
  if (!reg) {
    await api.register(id);
  } else if (reg.signing_key !== id.signingKey || reg.encryption_key !== id.encryptionKey) {
    throw new Error(`${id.handle} is registered on this server with other keys than this key file's.`);
  }
  await state.db.saveIdentity(id);
  start(id, 'Identity imported. You can save the key file again while this page stays open.');
}

function exportKeyFile() {
  const text = keyFile(state.me, location.origin);
  const a = el('a', { href: URL.createObjectURL(new Blob([text], { type: 'application/json' })), download: `${state.me.handle}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

function showBackup(text) {
  $('backup-text').textContent = text;
  $('export').hidden = !state.me.secrets;
}

// ---- contacts and keys

// pin records the keys the registry gives for a contact. The first keys seen
// are trusted; different keys later are held back until the person accepts
// them, and the conversation says so.
async function pin(h) {
  const c = (await state.db.contact(h.handle)) ?? { handle: h.handle };
  if (!c.signing_key) {
    Object.assign(c, { signing_key: h.signing_key, encryption_key: h.encryption_key });
    delete c.changed;
  } else if (c.signing_key !== h.signing_key || c.encryption_key !== h.encryption_key) {
    c.changed = { signing_key: h.signing_key, encryption_key: h.encryption_key };
  } else {
    delete c.changed;
  }
  await state.db.saveContact(c);
  if (c.handle === state.current) renderPeer(c);
  return c;
}

// senderKey is the registered signing key of handle, for opening envelopes;
// null when the handle has none. A server that cannot be reached rejects, so
// the message is tried again later rather than shown as unopenable.
async function senderKey(handle) {
  const hit = state.keys.get(handle);
  if (hit && Date.now() - hit.at < KEY_TTL) return hit.signing_key;
  const h = await api.lookup(handle);
  if (!h) return null;
  await pin(h);
  state.keys.set(handle, { signing_key: h.signing_key, at: Date.now() });
  return h.signing_key;
}

async function renderContacts() {
  const list = $('contacts');
  const contacts = (await state.db.contacts()).sort((a, b) => (b.last ?? 0) - (a.last ?? 0) || a.handle.localeCompare(b.handle));
  list.replaceChildren(
    ...contacts.map((c) => {
      const b = el('button', { type: 'button', 'data-handle': c.handle }, el('span', { class: 'name' }, c.handle));
      if (c.unread && c.handle !== state.current) b.append(el('span', { class: 'badge', 'aria-label': `${c.unread} unread` }, String(c.unread)));
      if (c.changed) b.append(el('span', { class: 'badge warn', title: 'keys changed' }, '!'));
      if (c.handle === state.current) b.setAttribute('aria-current', 'true');
      b.addEventListener('click', () => openConversation(c.handle).catch(showError));
      return el('li', {}, b);
    }),
  );
}

// ---- conversations

async function openConversation(handle) {
  state.current = handle;
  $('app').classList.add('show-conv');
  $('empty').hidden = true;
  $('conv-body').hidden = false;
  $('peer-title').textContent = handle;
  let c = await state.db.contact(handle);
  renderPeer(c ?? { handle });
  if (c?.unread) {
    c.unread = 0;
    await state.db.saveContact(c);
  }
  await renderMessages();
  renderContacts();
  $('compose').focus();
  // Check the keys again: a change shows as a warning.
  try {
    const h = await api.lookup(handle);
    if (h) await pin(h);
  } catch (err) {
    showError(err);
  }
}

function renderPeer(c) {
  $('peer-fp').textContent = c.signing_key ? fingerprint(c.signing_key) : 'unknown';
  const w = $('key-warning');
  if (c.changed) {
    $('key-warning-text').textContent =
      `Warning: ${c.handle}'s keys changed. The fingerprint was ${fingerprint(c.signing_key)} and is now ${fingerprint(c.changed.signing_key)}. ` +
      'Someone may be impersonating them. Ask them, in another way, for their fingerprint before you trust the new keys. Messages are not sent until you do.';
    w.hidden = false;
  } else {
    w.hidden = true;
  }
}

async function acceptKeys() {
  const c = await state.db.contact(state.current);
  if (!c?.changed) return;
  Object.assign(c, c.changed);
  delete c.changed;
  await state.db.saveContact(c);
  renderPeer(c);
  renderContacts();
  $('compose').focus();
}

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function messageItem(m) {
  const li = el('li', { class: `msg ${m.dir}${m.error && m.dir === 'in' ? ' bad' : ''}`, 'data-key': m.key, 'data-dir': m.dir, 'data-id': m.id });
  if (m.dir === 'in' && m.error) {
    li.append(el('p', { class: 'text' }, `This message could not be opened: ${m.error}.`));
  } else {
    li.append(el('p', { class: 'text' }, m.text));
  }
  const meta = el('p', { class: 'meta' }, el('time', { dateTime: new Date(m.at).toISOString() }, time(m.at)));
  if (m.dir === 'out') {
    li.dataset.status = m.status;
    if (m.status === 'sending') meta.append(' · sending…');
    if (m.status === 'failed') {
      meta.append(` · not sent: ${m.error}`);
      const retry = el('button', { type: 'button', class: 'retry' }, 'Retry');
      retry.addEventListener('click', () => deliver(m));
      meta.append(' ', retry);
    }
  }
  li.append(meta);
  return li;
}

async function renderMessages() {
  const ol = $('messages');
  const msgs = await state.db.messages(state.current);
  ol.replaceChildren(...msgs.map(messageItem));
  ol.scrollTop = ol.scrollHeight;
}

// show puts one message in the open conversation (new or changed).
function show(m) {
  if (m.peer !== state.current) return;
  const ol = $('messages');
  const li = messageItem(m);
  const old = ol.querySelector(`li[data-key="${CSS.escape(m.key)}"]`);
  const atEnd = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
  if (old) old.replaceWith(li);
  else ol.append(li);
  if (atEnd || m.dir === 'out') ol.scrollTop = ol.scrollHeight;
}

function newID() {
  return Date.now().toString(36) + '-' + hex(crypto.getRandomValues(new Uint8Array(8)));
}

async function sendText(text) {
  const c = await state.db.contact(state.current);
  if (!c?.encryption_key) throw new Error(`The keys of ${state.current} are not known yet.`);
  if (c.changed) throw new Error(`${c.handle}'s keys changed: check and accept them before sending.`);
  const id = newID();
  const envelope = await seal(state.me, { handle: c.handle, encryptionKey: c.encryption_key }, id, Math.floor(Date.now() / 1000), text);
  const m = { key: `out/${id}`, peer: c.handle, dir: 'out', id, text, at: Date.now(), n: 0, status: 'sending', envelope };
  await state.db.putMessage(m);
  c.last = m.at;
  await state.db.saveContact(c);
  show(m);
  await deliver(m);
}

// deliver posts a kept outgoing message. A retry sends the same id and
// envelope, so the server stores it once however often it is tried.
const inFlight = new Set();
async function deliver(m) {
  if (inFlight.has(m.key)) return;
  inFlight.add(m.key);
  try {
    const r = await api.send(state.me, m.peer, m.id, m.envelope);
    Object.assign(m, { status: 'sent', seq: r.seq, error: '' });
  } catch (err) {
    Object.assign(m, { status: 'failed', error: api.words(err) });
  } finally {
    inFlight.delete(m.key);
  }
  await state.db.putMessage(m);
  show(m);
  state.channel?.postMessage({ peer: m.peer });
}

// retryPending sends again what could not be sent, once the server is back.
async function retryPending() {
  for (const c of await state.db.contacts()) {
    for (const m of await state.db.messages(c.handle)) {
      if (m.dir === 'out' && m.status !== 'sent') deliver(m);
    }
  }
}

// ---- receiving

async function receive(m) {
  const seq = m.seq;
  if (!Number.isSafeInteger(seq) || seq <= state.cursor) return;
  const from = validHandle(m.from) ? m.from : '?';
  const rec = { key: `in/${from}/${m.id}`, peer: from, dir: 'in', id: String(m.id), at: Date.parse(m.sent_at) || Date.now(), n: seq, seq };
  try {
    const o = await openStored(m, state.me, senderKey);
    rec.text = o.text;
  } catch (err) {
    if (!(err instanceof EnvelopeError)) throw err; // try again after reconnecting
    rec.error = err.message;
    rec.code = err.code;
  }
  const added = await state.db.receive(seq, rec);
  state.cursor = seq;
  if (!added) return;
  const c = await state.db.contact(from);
  if (c) {
    c.last = rec.at;
    if (from === state.current) c.unread = 0;
    await state.db.saveContact(c);
  }
  show(rec);
  renderContacts();
  state.channel?.postMessage({ peer: from });
}

// ---- start

function start(id, backup) {
  if (state.me) return;
  state.me = id;
  $('welcome').hidden = true;
  $('app').hidden = false;
  const me = $('me');
  me.textContent = `signed in as ${id.handle}`;
  me.hidden = false;
  $('my-fp').textContent = fingerprint(id.signingKey);
  showBackup(backup ?? 'This browser keeps your keys and cannot export them (they are non-extractable). To use this handle elsewhere, use the key file you saved when you made it.');
  state.channel = new BroadcastChannel('kez');
  state.channel.onmessage = async (ev) => {
    // Another tab of this identity kept something: show it here too.
    state.cursor = Math.max(state.cursor, await state.db.cursor());
    if (ev.data?.peer === state.current) await renderMessages();
    renderContacts();
  };
  state.db.cursor().then((cur) => {
    state.cursor = cur;
    state.live = new Live({ id, cursor: () => state.cursor, handle: receive, onStatus: setStatus });
    state.live.start();
  });
  renderContacts();
  $('address').focus();
}

function wire() {
  $('create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const btn = $('create');
    btn.disabled = true;
    showError(null);
    try {
      await createIdentity($('handle-input').value.trim());
    } catch (err) {
      showError(err);
    } finally {
      btn.disabled = false;
    }
  });
  $('import-file').addEventListener('change', async (ev) => {
    showError(null);
    const f = ev.target.files[0];
    if (!f) return;
    try {
      await importIdentity(f);
    } catch (err) {
      showError(err);
    }
  });
  $('export').addEventListener('click', () => {
    try {
      exportKeyFile();
    } catch (err) {
      showError(err);
    }
  });
  $('new-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    try {
      const h = await api.resolve($('address').value);
      await pin(h);
      $('address').value = '';
      await openConversation(h.handle);
    } catch (err) {
      showError(err);
    }
  });
  $('accept-key').addEventListener('click', () => acceptKeys().catch(showError));
  $('back').addEventListener('click', () => {
    $('app').classList.remove('show-conv');
    $('address').focus();
  });
  const compose = $('compose');
  compose.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('compose-form').requestSubmit();
    }
  });
  $('compose-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = compose.value;
    if (!text.trim()) return;
    showError(null);
    compose.value = '';
    try {
      await sendText(text);
    } catch (err) {
      compose.value = text;
      showError(err);
    }
    compose.focus();
  });
}

async function boot() {
  try {
    state.db = await openDB();
  } catch (err) {
    showError(new Error('This browser does not let kez keep data (IndexedDB is unavailable), so it cannot keep your keys.'));
    return;
  }
  wire();
  const id = await state.db.identity();
  if (state.me) return; // an identity was made or imported meanwhile
  if (id) {
    start(id);
  } else {
    $('welcome').hidden = false;
    setStatus('connecting', 'no identity yet');
    $('handle-input').focus();
  }
}

boot();
