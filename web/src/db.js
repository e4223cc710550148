// The browser's own store (IndexedDB): the identity with its non-extractable
// keys, contacts with the keys first seen for them, every message of every
// conversation (received and sent), and the inbox cursor. A received message
// and the cursor that covers it are written in one transaction, so a reload
// or a crash never skips a message nor shows one twice.
const NAME = 'kez';
const VERSION = 1;

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('transaction aborted'));
  });
}

// stripped is an identity without raw secrets, its own or its previous key
// sets'.
function stripped(id) {
  const { secrets, ...kept } = id;
  if (kept.previous) kept.previous = kept.previous.map(({ secrets, ...p }) => p);
  if (kept.pending) kept.pending = stripped(kept.pending);
  return kept;
}

export async function openDB() {
  const r = indexedDB.open(NAME, VERSION);
  r.onupgradeneeded = () => {
    const db = r.result;
    db.createObjectStore('meta');
    db.createObjectStore('contacts', { keyPath: 'handle' });
    const m = db.createObjectStore('messages', { keyPath: 'key' });
    m.createIndex('peer', ['peer', 'at', 'n']);
  };
  return new DB(await req(r));
}

class DB {
  constructor(db) {
    this.db = db;
    // A tab that upgrades the schema later closes this one's connection.
    db.onversionchange = () => db.close();
  }

  async get(store, key) {
    return req(this.db.transaction(store).objectStore(store).get(key));
  }

  async put(store, value, key) {
    const tx = this.db.transaction(store, 'readwrite');
    tx.objectStore(store).put(value, key);
    return done(tx);
  }

  identity() {
    return this.get('meta', 'identity');
  }

  // saveIdentity keeps an identity without its raw secrets: only the
  // non-extractable CryptoKeys and the public keys are stored.
  // A rotation's previous key sets are kept the same way. One put, so the
  // stored identity is the old one or the rotated one, never half of each.
  saveIdentity(id) {
    return this.put('meta', stripped(id), 'identity');
  }

  // clear removes everything kept: the identity, contacts, messages and the
  // cursor (after the account was deleted).
  async clear() {
    const tx = this.db.transaction(['meta', 'contacts', 'messages'], 'readwrite');
    for (const s of ['meta', 'contacts', 'messages']) tx.objectStore(s).clear();
    return done(tx);
  }

  async cursor() {
    return (await this.get('meta', 'cursor')) ?? 0;
  }

  // setCursor sets the cursor to seq, down as well as up.
  setCursor(seq) {
    return this.put('meta', seq, 'cursor');
  }

  contact(handle) {
    return this.get('contacts', handle);
  }

  async contacts() {
    return req(this.db.transaction('contacts').objectStore('contacts').getAll());
  }

  saveContact(c) {
    return this.put('contacts', c);
  }

  async messages(peer) {
    const range = IDBKeyRange.bound([peer, -Infinity, -Infinity], [peer, Infinity, Infinity]);
    return req(this.db.transaction('messages').objectStore('messages').index('peer').getAll(range));
  }

  message(key) {
    return this.get('messages', key);
  }

  putMessage(m) {
    return this.put('messages', m);
  }

  // receive stores a received message (m, or nothing when it is null) and
  // moves the cursor to seq, atomically. It returns false when seq was
  // already covered or the message was already kept: a replayed or
  // redelivered message is not stored twice.
  async receive(seq, m) {
    const tx = this.db.transaction(['meta', 'messages', 'contacts'], 'readwrite');
    const meta = tx.objectStore('meta');
    const msgs = tx.objectStore('messages');
    const cursor = (await req(meta.get('cursor'))) ?? 0;
    let added = false;
    if (seq > cursor) {
      meta.put(seq, 'cursor');
      if (m && !(await req(msgs.getKey(m.key)))) {
        msgs.put(m);
        added = true;
        const contacts = tx.objectStore('contacts');
        const c = await req(contacts.get(m.peer));
        if (!c) contacts.put({ handle: m.peer, unread: 1 });
        else contacts.put({ ...c, unread: (c.unread ?? 0) + 1 });
      }
    }
    await done(tx);
    return added;
  }
}
