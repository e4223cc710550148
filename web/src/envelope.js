// The kez envelope, version 1 (docs/envelope.md), and the identity it is
// sealed with. Byte-compatible with the Go envelope package and the kez CLI:
// the same JSON member order, the same header, HKDF, AEAD and signature.
//
// Private keys are WebCrypto CryptoKeys. Once an identity is stored they are
// non-extractable: page script can use them but never read them back.
// ChaCha20-Poly1305 is not in WebCrypto, so that one primitive is
// @noble/ciphers.
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

export const VERSION = 1;
export const MAX_PLAINTEXT = 45 << 10;
const LABEL = 'kez-envelope/1';
const TAG = 16;

// EnvelopeError is why an envelope was refused; code is the Go sentinel's
// name in docs/envelope.md (malformed, unsupported_version, ...).
export class EnvelopeError extends Error {
  constructor(code, detail) {
    super(detail ? `${MESSAGES[code]}: ${detail}` : MESSAGES[code]);
    this.name = 'EnvelopeError';
    this.code = code;
  }
}

// What a person is told for each refusal, as the CLI words it.
export const MESSAGES = {
  malformed: 'malformed envelope',
  unsupported_version: 'unsupported envelope version',
  wrong_recipient: 'envelope is not addressed to this handle and key',
  unknown_sender: 'envelope sender is unknown',
  sender_key_mismatch: "envelope sender key is not the sender's registered key",
  bad_signature: 'envelope signature does not verify (altered or forged)',
  decrypt: 'envelope does not decrypt',
  relabelled: 'the server delivered this envelope under another sender, recipient or id',
};

const HANDLE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const KEY_HEX = /^[0-9a-f]{64}$/;
const SIG_HEX = /^[0-9a-f]{128}$/;
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const INT = /^-?(?:0|[1-9][0-9]*)$/;
const MAX_INT64 = 9223372036854775807n;
const MEMBERS = ['v', 'from', 'to', 'id', 'ts', 'sender_key', 'recipient_key', 'ephemeral_key', 'ciphertext', 'sig'];

export const validHandle = (h) => typeof h === 'string' && HANDLE.test(h);
export const validClientID = (id) => typeof id === 'string' && CLIENT_ID.test(id);

// ---- encodings

export function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function unhex(s) {
  if (typeof s !== 'string' || s.length % 2 || /[^0-9a-f]/.test(s)) throw new Error('not lowercase hex');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

export function b64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

// unb64 decodes standard padded base64 strictly, as Go's
// base64.StdEncoding.Strict(): no whitespace, and unused bits zero.
function unb64(s) {
  if (!B64.test(s)) throw new Error('not standard padded base64');
  const bin = atob(s);
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (b64(out) !== s) throw new Error('non-canonical base64');
  return out;
}

const b64url = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));

export async function sha256hex(bytes) {
  return hex(new Uint8Array(await subtle.digest('SHA-256', bytes)));
}

// ---- keys

// PKCS #8 wrappers of a raw 32-byte Ed25519 seed and X25519 secret (RFC 8410).
const PKCS8 = {
  Ed25519: unhex('302e020100300506032b657004220420'),
  X25519: unhex('302e020100300506032b656e04220420'),
};

function pkcs8(alg, raw) {
  const out = new Uint8Array(48);
  out.set(PKCS8[alg]);
  out.set(raw, 16);
  return out;
}

const usages = (alg) => (alg === 'Ed25519' ? ['sign'] : ['deriveBits']);

// importSecret imports a raw seed or secret as a private CryptoKey and returns
// it with its public key, read through a one-off extractable copy.
async function importSecret(alg, raw, extractable) {
  const data = pkcs8(alg, raw);
  const probe = await subtle.importKey('pkcs8', data, { name: alg }, true, usages(alg));
  const jwk = await subtle.exportKey('jwk', probe);
  const key = extractable ? probe : await subtle.importKey('pkcs8', data, { name: alg }, false, usages(alg));
  return { key, pub: b64url(jwk.x) };
}

// Identity is a handle's private keys (CryptoKeys) and public keys (hex).
// secrets holds the raw seed and secret only while an identity has just been
// made or imported, so that it can be exported as a key file; a stored
// identity has none.

// newIdentity generates fresh keys for handle.
export async function newIdentity(handle) {
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const secret = crypto.getRandomValues(new Uint8Array(32));
  return identityFromSecrets(handle, seed, secret);
}

// fromSecrets is the identity of a raw seed and secret (hex), as a key file
// holds them.
export const fromSecrets = (handle, seedHex, secretHex) => identityFromSecrets(handle, unhex(seedHex), unhex(secretHex));

async function identityFromSecrets(handle, seed, secret) {
  if (!validHandle(handle)) throw new Error('a handle is 1 to 32 of a-z 0-9 _ -, starting with a letter or digit');
  const s = await importSecret('Ed25519', seed, false);
  const e = await importSecret('X25519', secret, false);
  return {
    handle,
    signKey: s.key,
    encKey: e.key,
    signingKey: hex(s.pub),
    encryptionKey: hex(e.pub),
    secrets: { seed: hex(seed), secret: hex(secret) },
  };
}

// parseKeyFile reads a key file as `kez keygen` writes it and checks that its
// public keys are those of its secrets.
export async function parseKeyFile(text) {
  let k;
  try {
    k = JSON.parse(text);
  } catch {
    throw new Error('this is not a kez key file (not JSON)');
  }
  if (!k || typeof k !== 'object' || Array.isArray(k)) throw new Error('this is not a kez key file');
  for (const f of ['handle', 'signing_seed', 'encryption_secret', 'signing_key', 'encryption_key']) {
    if (typeof k[f] !== 'string') throw new Error(`key file: ${f} is missing`);
  }
  if (!validHandle(k.handle)) throw new Error('key file: the handle is not valid');
  let seed, secret;
  try {
    seed = unhex(k.signing_seed);
    secret = unhex(k.encryption_secret);
  } catch {
    throw new Error('key file: the secrets must be lowercase hex');
  }
  if (seed.length !== 32 || secret.length !== 32) throw new Error('key file: each secret must be 32 bytes');
  const id = await identityFromSecrets(k.handle, seed, secret);
  if (id.signingKey !== k.signing_key || id.encryptionKey !== k.encryption_key) {
    throw new Error('key file: public keys do not match the secrets');
  }
  id.server = typeof k.server === 'string' ? k.server : '';
  // The key sets from before rotations (`kez rotate` keeps them, oldest
  // first), so that messages sealed to them still open.
  id.previous = [];
  if (k.previous !== undefined) {
    if (!Array.isArray(k.previous)) throw new Error('key file: previous must be a list');
    for (const [i, p] of k.previous.entries()) {
      const n = i + 1;
      if (!p || typeof p !== 'object') throw new Error(`key file: previous keys ${n} are not an object`);
      for (const f of ['signing_seed', 'encryption_secret', 'signing_key', 'encryption_key']) {
        if (typeof p[f] !== 'string') throw new Error(`key file: previous keys ${n}: ${f} is missing`);
      }
      let old;
      try {
        old = await fromSecrets(k.handle, p.signing_seed, p.encryption_secret);
      } catch {
        throw new Error(`key file: previous keys ${n}: the secrets must be 32 bytes of lowercase hex`);
      }
      if (old.signingKey !== p.signing_key || old.encryptionKey !== p.encryption_key) {
        throw new Error(`key file: previous keys ${n}: public keys do not match the secrets`);
      }
      delete old.handle;
      id.previous.push(old);
    }
  }
  return id;
}

// rotated is id with next's keys, id's keys kept as the newest previous set
// (as `kez rotate` keeps them in the key file).
export function rotated(id, next) {
  const { signKey, encKey, signingKey, encryptionKey, secrets } = id;
  const old = { signKey, encKey, signingKey, encryptionKey };
  if (secrets) old.secrets = secrets;
  return { ...next, previous: [...(id.previous ?? []), old] };
}

// exportable reports whether keyFile can write id whole: its secrets and
// those of every previous key set are still in memory.
export const exportable = (id) => !!id.secrets && (id.previous ?? []).every((p) => p.secrets);

// keyFile is the key file of id, byte for byte what `kez keygen` writes
// (Go's json.MarshalIndent with two spaces, then a newline).
export function keyFile(id, server) {
  if (!id.secrets) throw new Error('the secret keys of this identity cannot be exported any more');
  const k = {
    handle: id.handle,
    signing_seed: id.secrets.seed,
    encryption_secret: id.secrets.secret,
    signing_key: id.signingKey,
    encryption_key: id.encryptionKey,
  };
  if (server) k.server = server;
  // The previous key sets whose secrets this page still has; a stored
  // identity's are non-extractable (exportable says whether all are here).
  const previous = (id.previous ?? []).filter((p) => p.secrets);
  if (previous.length) {
    k.previous = previous.map((p) => ({
      signing_seed: p.secrets.seed,
      encryption_secret: p.secrets.secret,
      signing_key: p.signingKey,
      encryption_key: p.encryptionKey,
    }));
  }
  return goJSON(k, '  ') + '\n';
}

// goJSON is JSON as Go's encoding/json writes it: <, >, & and the line
// separators escaped, which JSON.stringify does not do.
function goJSON(v, indent) {
  return JSON.stringify(v, null, indent).replace(/[<>&\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

// sign signs a canonical string with the identity's signing key; hex.
export async function sign(id, text) {
  return hex(new Uint8Array(await subtle.sign('Ed25519', id.signKey, enc.encode(text))));
}

async function verify(pubHex, sigHex, data) {
  try {
    const pub = await subtle.importKey('raw', unhex(pubHex), 'Ed25519', false, ['verify']);
    return await subtle.verify('Ed25519', pub, unhex(sigHex), data);
  } catch {
    return false;
  }
}

// x25519 is the shared secret of a private CryptoKey and a raw public key.
// WebCrypto refuses an all-zero result, as the envelope format requires.
async function x25519(priv, pubRaw) {
  const pub = await subtle.importKey('raw', pubRaw, 'X25519', false, []);
  return new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: pub }, priv, 256));
}

async function deriveKeyNonce(shared, ephPub, recipientPub) {
  const ikm = await subtle.importKey('raw', shared, 'HKDF', false, ['deriveBits']);
  const salt = new Uint8Array(64);
  salt.set(ephPub);
  salt.set(recipientPub, 32);
  const okm = new Uint8Array(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: enc.encode(LABEL) }, ikm, 44 * 8));
  return { key: okm.slice(0, 32), nonce: okm.slice(32, 44) };
}

const header = (e) => [LABEL, e.from, e.to, e.id, String(e.ts), e.sender_key, e.recipient_key, e.ephemeral_key].join('\n');

// ---- seal

// seal encrypts text from me to a peer ({handle, encryptionKey} hex) and
// signs it. It returns the envelope's JSON text, member for member what the
// Go package writes. ephemeralSecret (hex) exists for the test vectors only;
// otherwise the ephemeral key is fresh and random.
export async function seal(me, peer, id, ts, text, ephemeralSecret) {
  if (!validHandle(me.handle)) throw new Error('sender handle is not valid');
  if (!validHandle(peer.handle)) throw new Error('recipient handle is not valid');
  if (!validClientID(id)) throw new Error('message id is not valid');
  if (!Number.isSafeInteger(ts) || ts < 0) throw new Error('timestamp must be a non-negative integer');
  const plaintext = enc.encode(text);
  if (plaintext.length > MAX_PLAINTEXT) {
    throw new Error(`the message is ${plaintext.length} bytes; at most ${MAX_PLAINTEXT} fit in an envelope`);
  }
  const ephSecret = ephemeralSecret ? unhex(ephemeralSecret) : crypto.getRandomValues(new Uint8Array(32));
  const eph = await importSecret('X25519', ephSecret, false);
  const recipientPub = unhex(peer.encryptionKey);
  let shared;
  try {
    shared = await x25519(eph.key, recipientPub);
  } catch {
    throw new Error("key agreement with the recipient's encryption key failed");
  }
  const e = {
    v: VERSION,
    from: me.handle,
    to: peer.handle,
    id,
    ts,
    sender_key: me.signingKey,
    recipient_key: peer.encryptionKey,
    ephemeral_key: hex(eph.pub),
  };
  const { key, nonce } = await deriveKeyNonce(shared, eph.pub, recipientPub);
  const h = header(e);
  const ct = chacha20poly1305(key, nonce, enc.encode(h)).encrypt(plaintext);
  e.ciphertext = b64(ct);
  e.sig = await sign(me, h + '\n' + (await sha256hex(ct)));
  return goJSON(e);
}

// ---- open

// parse decodes raw envelope JSON text and checks every member's syntax, as
// the Go package's Parse does: the version first, then exactly the members
// of version 1.
export function parse(raw) {
  let e;
  const seen = [];
  try {
    // The reviver's source text keeps the spelling of numbers (1.0 is not
    // 1), which JSON.parse alone would lose; only top-level members count.
    e = JSON.parse(raw, function (k, v, ctx) {
      if ((k === 'v' || k === 'ts') && ctx && typeof ctx.source === 'string') seen.push([this, k, ctx.source]);
      return v;
    });
  } catch {
    throw new EnvelopeError('malformed', 'not JSON');
  }
  if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new EnvelopeError('malformed', 'not an object');
  const source = {};
  for (const [holder, k, src] of seen) if (holder === e) source[k] = src;
  if (!('v' in e)) throw new EnvelopeError('malformed', 'no version field');
  let vText;
  if (typeof e.v === 'number') vText = source.v ?? String(e.v);
  else if (typeof e.v === 'string' && /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(e.v)) vText = e.v;
  else throw new EnvelopeError('malformed', 'version is not a number');
  if (vText !== String(VERSION)) throw new EnvelopeError('unsupported_version', `${vText} (this client opens version ${VERSION})`);
  if (typeof e.v !== 'number') throw new EnvelopeError('malformed', 'version is not a number');
  for (const k of Object.keys(e)) {
    if (!MEMBERS.includes(k)) throw new EnvelopeError('malformed', `unknown member ${JSON.stringify(k)}`);
  }
  if (!validHandle(e.from)) throw new EnvelopeError('malformed', 'from');
  if (!validHandle(e.to)) throw new EnvelopeError('malformed', 'to');
  if (!validClientID(e.id)) throw new EnvelopeError('malformed', 'id');
  const ts = source.ts ?? (typeof e.ts === 'number' ? String(e.ts) : '');
  if (typeof e.ts !== 'number' || !INT.test(ts) || BigInt(ts) > MAX_INT64) throw new EnvelopeError('malformed', 'ts is not an integer');
  if (ts.startsWith('-')) throw new EnvelopeError('malformed', 'ts must not be negative');
  for (const k of ['sender_key', 'recipient_key', 'ephemeral_key']) {
    if (typeof e[k] !== 'string' || !KEY_HEX.test(e[k])) throw new EnvelopeError('malformed', `${k} must be 64 lowercase hex characters`);
  }
  if (typeof e.sig !== 'string' || !SIG_HEX.test(e.sig)) throw new EnvelopeError('malformed', 'sig must be 128 lowercase hex characters');
  let ct;
  try {
    if (typeof e.ciphertext !== 'string') throw new Error('missing');
    ct = unb64(e.ciphertext);
  } catch (err) {
    throw new EnvelopeError('malformed', 'ciphertext: ' + err.message);
  }
  if (ct.length < TAG) throw new EnvelopeError('malformed', 'ciphertext is shorter than its tag');
  return { env: { ...e, ts }, ct };
}

// open checks an envelope addressed to me, in the order of docs/envelope.md,
// and returns {from, to, id, ts, text}. senderKey(handle) resolves to the
// registered signing key (hex) of handle, or null when it has none. Every
// refusal is an EnvelopeError.
export async function open(raw, me, senderKey) {
  const { env: e, ct } = parse(raw);
  // The recipient key may be one from before a rotation: a message sealed
  // to it opens with that key's secret.
  const keys = e.to === me.handle ? [me, ...(me.previous ?? [])].find((k) => k.encryptionKey === e.recipient_key) : null;
  if (!keys) {
    throw new EnvelopeError('wrong_recipient', `sealed for ${JSON.stringify(e.to)}`);
  }
  const registered = await senderKey(e.from);
  if (!registered) throw new EnvelopeError('unknown_sender', JSON.stringify(e.from));
  if (registered !== e.sender_key) throw new EnvelopeError('sender_key_mismatch', JSON.stringify(e.from));
  const h = header(e);
  if (!(await verify(registered, e.sig, enc.encode(h + '\n' + (await sha256hex(ct)))))) {
    throw new EnvelopeError('bad_signature');
  }
  const ephPub = unhex(e.ephemeral_key);
  let shared;
  try {
    shared = await x25519(keys.encKey, ephPub);
  } catch {
    throw new EnvelopeError('decrypt', 'key agreement');
  }
  const { key, nonce } = await deriveKeyNonce(shared, ephPub, unhex(keys.encryptionKey));
  let pt;
  try {
    pt = chacha20poly1305(key, nonce, enc.encode(h)).decrypt(ct);
  } catch {
    throw new EnvelopeError('decrypt');
  }
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(pt);
  } catch {
    throw new EnvelopeError('decrypt', 'the plaintext is not UTF-8 text');
  }
  return { from: e.from, to: e.to, id: e.id, ts: Number(e.ts), text };
}

// openStored opens a stored message ({from, to, id, envelope}) and refuses
// one whose envelope names another sender, recipient or id than the server
// delivered it under.
//
// senderKeyAt(handle), when given, is the sender's signing key as of the
// message (a lookup ?at= its sent_at): a message sealed before its sender
// rotated does not verify with the current key, so it is tried again with
// that one, as the Go client's Open does.
export async function openStored(m, me, senderKey, senderKeyAt) {
  const raw = typeof m.envelope === 'string' ? m.envelope : JSON.stringify(m.envelope);
  let o;
  try {
    o = await open(raw, me, senderKey);
  } catch (err) {
    if (!senderKeyAt || !(err instanceof EnvelopeError) || !['sender_key_mismatch', 'bad_signature', 'unknown_sender'].includes(err.code)) throw err;
    o = await open(raw, me, senderKeyAt);
  }
  if (o.from !== m.from || o.to !== m.to || o.id !== m.id) throw new EnvelopeError('relabelled');
  return o;
}

// fingerprint is a signing key written in groups of four, for people to read
// aloud and compare with `kez` output.
export const fingerprint = (keyHex) => keyHex.match(/.{1,4}/g).join(' ');
