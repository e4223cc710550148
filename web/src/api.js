// The kezd HTTP API as PROTOCOL.md defines it, from the browser: signed
// requests, lookups, WebFinger and opening the stream. Every failure is an
// ApiError whose message a person can act on.
import { sign, sha256hex, validHandle } from './envelope.js';

const enc = new TextEncoder();
const now = () => Math.floor(Date.now() / 1000);

// ApiError is a failed request: code is the protocol's error code, or
// "unreachable" when the server could not be reached at all.
export class ApiError extends Error {
  // own marks a message this client wrote for a person, which words()
  // shows as it is.
  constructor(code, message, status, retryAfter, own) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    this.own = own;
  }
}

const mine = (code, message, status) => new ApiError(code, message, status, 0, true);

// What a person is told for each error code the server sends.
const WORDS = {
  unreachable: 'The server cannot be reached. Check your connection; kez keeps trying.',
  unknown_handle: 'There is no such handle on this server.',
  handle_taken: 'That handle is taken. Choose another.',
  key_taken: 'These keys already belong to another handle.',
  invalid_handle: 'A handle is 1 to 32 characters of a-z, 0-9, _ and -, starting with a letter or digit.',
  stale_timestamp: "This device's clock is too far from the server's. Set the clock right and try again.",
  bad_signature: 'The server did not accept this identity\u2019s signature.',
  unauthorized: 'This identity is not registered on this server.',
  forbidden: 'The server does not allow this.',
  too_large: 'The message is too long.',
  rate_limited: 'Too many requests: slow down a little.',
  inbox_full: "The recipient's inbox is full; try again later.",
  unavailable: 'The server is busy; try again in a moment.',
};

export function words(err) {
  if (err instanceof ApiError) {
    let w = err.own ? err.message : (WORDS[err.code] ?? err.message);
    if (err.retryAfter) w += ` Try again in ${err.retryAfter} s.`;
    return w;
  }
  return err?.message ?? String(err);
}

async function request(path, init = {}) {
  let res;
  try {
    res = await fetch(path, { cache: 'no-store', credentials: 'omit', ...init });
  } catch {
    throw new ApiError('unreachable', WORDS.unreachable, 0);
  }
  const text = await res.text().catch(() => '');
  if (!res.ok) throw failure(res, text);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('internal', 'The server sent an answer kez cannot read.', res.status);
  }
}

// failure is the ApiError of a response that is not 2xx, body its text.
function failure(res, text) {
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {}
  const retry = parseInt(res.headers.get('Retry-After') ?? '', 10);
  const code = typeof body.error === 'string' ? body.error : res.status >= 500 ? 'unavailable' : 'internal';
  return new ApiError(code, typeof body.message === 'string' ? body.message : `HTTP ${res.status}`, res.status, retry > 0 ? retry : 0);
}

const json = (body) => ({ method: 'POST', headers: { 'Content-Type': 'application/json' }, body });

// register registers id's handle and public keys.
export async function register(id) {
  const ts = now();
  const sig = await sign(id, ['POST', '/v1/handles', id.handle, id.signingKey, id.encryptionKey, ts].join('\n'));
  return request('/v1/handles', json(JSON.stringify({ handle: id.handle, signing_key: id.signingKey, encryption_key: id.encryptionKey, ts, sig })));
}

// lookup returns a handle's registered keys, or null when it has none.
export async function lookup(handle) {
  try {
    return await request('/v1/handles/' + encodeURIComponent(handle));
  } catch (err) {
    if (err.code === 'unknown_handle') return null;
    throw err;
  }
}

// lookupAt returns the keys a handle had at time at (a message's sent_at,
// RFC 3339), or null when it had none then.
export async function lookupAt(handle, at) {
  try {
    return await request('/v1/handles/' + encodeURIComponent(handle) + '?at=' + encodeURIComponent(at));
  } catch (err) {
    if (err.code === 'unknown_handle') return null;
    throw err;
  }
}

// rotate replaces cur's keys at the server with next's; both sign it.
export async function rotate(cur, next) {
  const ts = now();
  const path = `/v1/handles/${cur.handle}/keys`;
  const text = ['POST', path, next.signingKey, next.encryptionKey, ts].join('\n');
  const [sig, newSig] = await Promise.all([sign(cur, text), sign(next, text)]);
  return request(path, json(JSON.stringify({ signing_key: next.signingKey, encryption_key: next.encryptionKey, ts, sig, new_sig: newSig })));
}

// deleteAccount deletes id's handle and its inbox at the server, for good.
export async function deleteAccount(id) {
  const ts = now();
  const path = `/v1/handles/${id.handle}`;
  const sig = await sign(id, ['DELETE', path, ts].join('\n'));
  return request(path, { method: 'DELETE', headers: { Authorization: `Kez ${id.handle}:${ts}:${sig}` } });
}

// resolve finds the keys of an address: a handle on this server, or
// handle@domain through WebFinger. It returns {handle, signing_key,
// encryption_key} or throws with words.
export async function resolve(address) {
  const a = address.trim().toLowerCase().replace(/^acct:/, '');
  const at = a.lastIndexOf('@');
  if (at < 0) {
    if (!validHandle(a)) throw new ApiError('invalid_handle', WORDS.invalid_handle, 400);
    const h = await lookup(a);
    if (!h) throw mine('unknown_handle', `There is no handle \u201c${a}\u201d on this server.`, 404);
    return h;
  }
  const handle = a.slice(0, at);
  const domain = a.slice(at + 1);
  if (!validHandle(handle)) throw new ApiError('invalid_handle', WORDS.invalid_handle, 400);
  if (!/^[a-z0-9.-]+(:[0-9]+)?$/.test(domain)) throw mine('invalid_request', `\u201c${domain}\u201d is not a domain.`, 400);
  // WebFinger is asked of this server only: the page may talk to no other
  // origin (its Content-Security-Policy), and protocol v1 delivers messages
  // only between handles of one server.
  let jrd;
  try {
    jrd = await request('/.well-known/webfinger?resource=' + encodeURIComponent(`acct:${handle}@${domain}`));
  } catch (err) {
    if (err.status === 404) {
      throw mine('unknown_handle', `${handle}@${domain} is not known to this server. kez delivers messages only between handles of one server.`, 404);
    }
    throw err;
  }
  const p = jrd.properties ?? {};
  const h = { handle, signing_key: p['https://kez.chat/ns/signing-key'], encryption_key: p['https://kez.chat/ns/encryption-key'] };
  if (typeof h.signing_key !== 'string' || typeof h.encryption_key !== 'string') {
    throw mine('internal', `WebFinger did not give the keys of ${handle}@${domain}.`, 200);
  }
  return h;
}

// send posts an envelope (JSON text) to a handle with client id, signed by id.
// It returns the server's answer ({seq, to, id, sent_at[, duplicate]}).
export async function send(id, to, clientID, envelopeText) {
  const body = `{"to":${JSON.stringify(to)},"id":${JSON.stringify(clientID)},"envelope":${envelopeText}}`;
  const ts = now();
  const sig = await sign(id, ['POST', '/v1/messages', await sha256hex(enc.encode(body)), ts].join('\n'));
  const init = json(body);
  init.headers.Authorization = `Kez ${id.handle}:${ts}:${sig}`;
  return request('/v1/messages', init);
}

// openStream opens id's inbox stream resuming after since, freshly signed
// (in the Authorization header, so no credential is in a URL), and returns
// the Response once the server accepted it; signal aborts it. A refusal is
// an ApiError with the server's reason, which EventSource could not tell.
export async function openStream(id, since, signal) {
  const ts = now();
  const path = `/v1/inbox/${id.handle}/stream`;
  const sig = await sign(id, ['GET', path, ts].join('\n'));
  let res;
  try {
    res = await fetch(`${path}?since=${since}`, {
      cache: 'no-store',
      credentials: 'omit',
      signal,
      headers: { Accept: 'text/event-stream', Authorization: `Kez ${id.handle}:${ts}:${sig}`, 'Last-Event-ID': String(since) },
    });
  } catch (err) {
    if (signal.aborted) throw err;
    throw new ApiError('unreachable', WORDS.unreachable, 0);
  }
  if (!res.ok) throw failure(res, await res.text().catch(() => ''));
  if (!/^text\/event-stream\b/.test(res.headers.get('Content-Type') ?? '')) {
    res.body?.cancel();
    throw new ApiError('internal', 'The server sent an answer kez cannot read.', res.status);
  }
  return res;
}
