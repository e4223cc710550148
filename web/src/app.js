// kez-chat in the browser: the page's behaviour. Plain DOM; every piece of
// text that came from the network or a person is set with textContent, never
// parsed as HTML.
import * as api from './api.js';
import { openDB } from './db.js';
import { Live } from './live.js';
import { EnvelopeError, exportable, fingerprint, keyFile, newIdentity, openStored, parseKeyFile, rotated, seal, validHandle, hex } from './envelope.js';

// The envelope code, for the browser tests that check it against the Go
// package's vectors.
export * as envelope from './envelope.js';
// The stream reader, for the browser tests of its parser.
export * as live from './live.js';

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
  pending: null, // new keys of a rotation the server may not have taken yet
  gaps: [], // runs of seqs deleted at the server before this browser kept them
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

// ---- messages deleted before this browser kept them

// showGap tells the person that the server deleted messages first to last
// (its retention, or a delete-through by another device of theirs) before
// this browser received them: which conversations they were in is gone
// with them, so it is said above all of them. The stream goes on.
function showGap(first, last) {
  state.gaps.push(first === last ? `${first}` : `${first}\u2013${last}`);
  const one = state.gaps.length === 1 && first === last;
  $('gap-text').textContent =
    `${one ? 'Message' : 'Messages'} ${state.gaps.join(', ')} ${one ? 'was' : 'were'} deleted from the server before this browser received ${one ? 'it' : 'them'}, ` +
    "by the server's retention period or by another of your devices. Newer messages arrive as usual.";
  $('gap').hidden = false;
}

function hideGap() {
  state.gaps = [];
  $('gap').hidden = true;
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

// notice tells the person something that went right (e.g. the account was
// deleted), where the error would be.
function showNotice(text) {
  const p = $('notice');
  p.textContent = text ?? '';
  p.hidden = !text;
}

function showBackup(text) {
  $('backup-text').textContent = text;
  $('export').hidden = !state.me.secrets;
}

// ---- rotation and deletion

// rotateKeys replaces this identity's keys with new ones made here. The new
// keys are kept (as pending) before the server hears of them, so a crash or
// a lost answer never loses keys the server already has; the rotated
// identity, which keeps the old keys so messages sealed to them still open,
// then replaces the stored one in one write.
async function rotateKeys() {
  const cur = state.me;
  // An earlier rotation whose answer was lost may have happened: settle it
  // first (its new keys are still in memory, or at least stored).
  const earlier = state.pending ?? (await state.db.identity())?.pending;
  let next = earlier;
  if (!next) {
    next = await newIdentity(cur.handle);
    await state.db.saveIdentity({ ...cur, pending: next });
  }
  state.pending = next;
  let err;
  try {
    if (!earlier) await api.rotate(cur, next);
  } catch (e) {
    err = e;
  }
  const id = await settle({ ...cur, pending: next });
  if (id.pending) throw err ?? new Error('An earlier rotation is not finished: the server cannot be reached. Try again.');
  state.pending = null;
  if (id.signingKey === cur.signingKey && id.encryptionKey === cur.encryptionKey) {
    throw err ?? new Error('The keys were not rotated. Try again.');
  }
  switchIdentity(id, rotatedText(id));
  state.channel?.postMessage({ identity: true });
}

// settle finishes or drops a rotation that was kept as pending: the server's
// registered keys say whether it happened. It returns the identity to use
// (still pending when the server cannot be asked).
async function settle(id) {
  if (!id.pending) return id;
  const { pending, ...cur } = id;
  let reg;
  try {
    reg = await api.lookup(cur.handle);
  } catch {
    return id;
  }
  const done = reg && reg.signing_key === pending.signingKey && reg.encryption_key === pending.encryptionKey;
  const out = done ? rotated(cur, pending) : cur;
  await state.db.saveIdentity(out);
  return done ? out : cur;
}

function rotatedText(id) {
  const t = 'Your keys were rotated: the server now knows only the new ones, and your old key file no longer works. Save your new key file now (the format kez rotate writes); this browser cannot export it later.';
  return exportable(id)
    ? t + ' It also holds your previous keys, so older messages still open with it.'
    : t + ' This browser cannot export the keys from before (they are non-extractable), so the new file holds only the keys it has; keep your old key file to read older messages with the kez CLI.';
}

// switchIdentity goes on with id (the same handle, other keys): a stream
// signed with the old key would be refused.
function switchIdentity(id, backup) {
  state.me = id;
  $('my-fp').textContent = fingerprint(id.signingKey);
  showBackup(backup);
  state.live?.stop();
  state.live = new Live({ id, cursor: () => state.cursor, handle: receive, onStatus: setStatus, onGap: showGap, rewind });
  state.live.start();
}

// deleteAccount deletes the handle at the server once the person typed it,
// then everything this browser keeps for it.
async function deleteAccount() {
  const handle = state.me.handle;
  if ($('delete-confirm').value.trim() !== handle) {
    throw new Error(`To delete the account, type its handle, ${handle}, in the box first.`);
  }
  try {
    await api.deleteAccount(state.me);
  } catch (err) {
    // Deleted already (by another device): only this browser's data is left.
    if (err.code !== 'unknown_handle') throw err;
  }
  await signOut();
  state.channel?.postMessage({ deleted: true });
  state.channel?.close();
  state.channel = null;
  showNotice(`The account ${handle} was deleted from the server, and its keys and messages from this browser.`);
}

// signOut forgets the identity and everything kept for it, and goes back to
// the start screen.
async function signOut() {
  state.live?.stop();
  state.live = null;
  await state.db.clear();
  Object.assign(state, { me: null, cursor: 0, current: '' });
  state.keys.clear();
  hideGap();
  $('app').hidden = true;
  $('app').classList.remove('show-conv');
  $('me').hidden = true;
  $('contacts').replaceChildren();
  $('messages').replaceChildren();
  $('conv-body').hidden = true;
  $('empty').hidden = false;
  $('delete-confirm').value = '';
  $('settings').open = false;
  $('welcome').hidden = false;
  setStatus('connecting', 'no identity yet');
  $('handle-input').focus();
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

// The open conversation's view changes one at a time, in the order they
// were asked for: a full render reads the store first, and a message shown
// while it reads must neither be wiped by the list it read nor shown twice.
let view = Promise.resolve();
function inOrder(f) {
  const p = view.then(f);
  view = p.catch(() => {});
  return p;
}

function renderMessages() {
  const peer = state.current;
  return inOrder(async () => {
    const msgs = await state.db.messages(peer);
    if (peer !== state.current) return; // another conversation's render follows
    const ol = $('messages');
    ol.replaceChildren(...msgs.map(messageItem));
    ol.scrollTop = ol.scrollHeight;
  });
}

// show puts one message in the open conversation (new or changed), after
// any render asked for before it.
function show(m) {
  return inOrder(() => showNow(m));
}

function showNow(m) {
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

// rewind moves the cursor back to seq, where a restored server resumes.
// What was kept stays: a message is kept under its sender and id, so one
// delivered again is not kept twice.
async function rewind(seq) {
  await state.db.setCursor(seq);
  state.cursor = seq;
}

async function receive(m) {
  const seq = m.seq;
  if (!Number.isSafeInteger(seq) || seq <= state.cursor) return;
  const from = validHandle(m.from) ? m.from : '?';
  const rec = { key: `in/${from}/${m.id}`, peer: from, dir: 'in', id: String(m.id), at: Date.parse(m.sent_at) || Date.now(), n: seq, seq };
  // A message sealed before its sender rotated verifies with the key the
  // sender had when it was stored.
  const keyAt = typeof m.sent_at === 'string' ? async (h) => (await api.lookupAt(h, m.sent_at))?.signing_key ?? null : null;
  try {
    const o = await openStored(m, state.me, senderKey, keyAt);
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
  showNotice(null);
  $('welcome').hidden = true;
  $('app').hidden = false;
  const me = $('me');
  me.textContent = `signed in as ${id.handle}`;
  me.hidden = false;
  $('my-fp').textContent = fingerprint(id.signingKey);
  showBackup(backup ?? 'This browser keeps your keys and cannot export them (they are non-extractable). To use this handle elsewhere, use the key file you saved when you made it.');
  state.channel = new BroadcastChannel('kez');
  state.channel.onmessage = async (ev) => {
    // Another tab rotated the keys or deleted the account: start again from
    // what it stored.
    if (ev.data?.identity || ev.data?.deleted) {
      location.reload();
      return;
    }
    // Another tab of this identity kept something: show it here too.
    state.cursor = Math.max(state.cursor, await state.db.cursor());
    if (ev.data?.peer === state.current) await renderMessages();
    renderContacts();
  };
  state.db.cursor().then((cur) => {
    state.cursor = cur;
    state.live = new Live({ id, cursor: () => state.cursor, handle: receive, onStatus: setStatus, onGap: showGap, rewind });
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
  $('rotate').addEventListener('click', async () => {
    const btn = $('rotate');
    btn.disabled = true;
    showError(null);
    try {
      await rotateKeys();
      $('export').focus();
    } catch (err) {
      showError(err);
    } finally {
      btn.disabled = false;
    }
  });
  $('delete-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const btn = $('delete');
    btn.disabled = true;
    showError(null);
    try {
      await deleteAccount();
    } catch (err) {
      showError(err);
    } finally {
      btn.disabled = false;
    }
  });
  $('accept-key').addEventListener('click', () => acceptKeys().catch(showError));
  $('gap-ok').addEventListener('click', hideGap);
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
  let id = await state.db.identity();
  if (state.me) return; // an identity was made or imported meanwhile
  if (id?.pending) {
    // A rotation was interrupted: finish it if the server has the new keys.
    id = await settle(id);
    if (state.me) return;
    if (id.pending) {
      const { pending, ...cur } = id;
      id = cur;
    }
  }
  if (id) {
    start(id, id.previous?.length ? 'This browser keeps your keys and cannot export them (they are non-extractable). Use the key file you saved when you last rotated them.' : undefined);
  } else {
    $('welcome').hidden = false;
    setStatus('connecting', 'no identity yet');
    $('handle-input').focus();
  }
}

boot();
