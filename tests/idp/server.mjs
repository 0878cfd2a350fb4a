// Test-only OpenID Provider for the kstlib.auth integration tests.
//
// NEVER deploy this: it accepts any login/password (devInteractions), ships
// fixed client secrets and exposes unauthenticated /__test__/ endpoints.
//
// How it is started
//   tests/idp_support.py (start_idp / the `idp` pytest fixture) runs `npm ci`
//   when needed, then `node server.mjs` with these environment variables:
//     IDP_PORT               port to listen on (127.0.0.1 only); 0 = pick a free
//                            one (default 0). Also accepted as argv[2].
//     IDP_READY_FILE         when set, JSON {"port", "issuer", "pid"} is written
//                            there once the server is listening.
//     IDP_STATE_FILE         when set, the adapter store, signing keys and cookie
//                            keys are persisted there (JSON) and reloaded on
//                            start, so a restart on the same port keeps grants,
//                            sessions and refresh tokens.
//     IDP_CLIENTS            JSON array of client metadata (defaults below).
//     IDP_ACCESS_TOKEN_TTL   access token lifetime in seconds (default 3600);
//                            changeable at runtime via POST /__test__/config.
//     IDP_ID_TOKEN_TTL, IDP_REFRESH_TOKEN_TTL   likewise (3600, 14 days).
//     IDP_STRICT_CLIENT_AUTH "0": accept client_secret_basic and _post
//                            interchangeably (oidc-provider's own behaviour);
//                            default strict: only the registered method.
//     IDP_EXIT_ON_STDIN_EOF  "1": exit when stdin closes (parent process died).
//     IDP_FAPI               "2.0": run oidc-provider's FAPI 2.0 Security Profile
//                            (features.fapi profile '2.0': PKCE required, client
//                            assertions with aud = the issuer) with pushed
//                            authorization requests required. DPoP is not
//                            required (oidc-provider's FAPI 2.0 profile does not
//                            force a sender constraint; the DPoP tests add it).
//   Standalone: `npm start` (or `IDP_PORT=9000 node server.mjs`).
//
// What it configures (panva/oidc-provider 9.x)
//   issuer http://127.0.0.1:PORT (no trailing slash); clients kstlib-confidential
//   (client_secret_basic), kstlib-confidential-post (client_secret_post),
//   kstlib-public (auth method none, PKCE S256 required), kstlib-es256
//   (client_secret_basic, ES256-signed ID tokens), kstlib-private-key-jwt
//   (private_key_jwt; its test-only keys in test-client-keys.json: RSA, P-256,
//   P-384, P-521, Ed25519) and kstlib-client-secret-jwt (client_secret_jwt).
//   Client assertions may use every RS/PS/ES/HS algorithm and EdDSA. All are application_type
//   "native": oidc-provider then accepts a registered loopback http redirect
//   URI (127.0.0.1 / localhost / [::1]) with ANY port (RFC 8252 section 7.3);
//   the host name and path must still match exactly. Side effect of "native":
//   oidc-provider asks for consent on EVERY authorization of a native client,
//   so prompt=none always ends in error=interaction_required.
//   client_secret_basic / client_secret_post are enforced strictly (only the
//   registered one is accepted; oidc-provider alone accepts either).
//   Refresh tokens are issued to every client allowed the refresh_token grant
//   (not only with offline_access) and rotated on every use; presenting an
//   already rotated refresh token revokes the whole grant. Revoking an access
//   token revokes every token of its grant too (oidc-provider behaviour).
//   Features:
//   devInteractions, revocation, introspection, userinfo, rpInitiatedLogout,
//   deviceFlow (see the device grant block).
//   Signing keys: one RSA 2048 (RS256) and one P-256 (ES256) key, generated at
//   startup; POST /__test__/rotate-keys swaps in freshly generated keys
//   in-process (the old ones stay in the JWKS as verify-only keys unless
//   {"keep_old": false}); the adapter store is shared, so grants, sessions and
//   tokens survive a rotation.
//
// Test-only endpoints (exist only in this server)
//   GET  /__test__/health                 {"ok": true, "issuer": ...}
//   GET  /__test__/stats                  request counters (see countRequest)
//   POST /__test__/stats/reset            zero the counters
//   POST /__test__/rotate-keys            {"keep_old": true|false} -> key info
//   GET  /__test__/keys                   {"active": [...kids], "retired": [...]}
//   GET  /__test__/config, POST /__test__/config   settings (JSON): token
//                                         TTLs, strict_client_auth
//   GET  /__test__/clients                the configured client metadata
//   GET  /__test__/resources              (issue 14) the RFC 8707 resource parameters
//                                         of the last request per route; POST
//                                         /__test__/resources/reset clears them.
//                                         Resource servers: https://rs.kstlib.test/...
//                                         Setting par_ttl (config): seconds a pushed
//                                         authorization request lives (default 60).
//   ANY  /__test__/api/...                protected resource: needs a valid
//        bearer access token of this IdP; 200 {"sub","client_id","scope",
//        "method","path","query","body"} or 401 + WWW-Authenticate.
//        A DPoP-bound token (RFC 9449) needs "Authorization: DPoP <token>" and a
//        valid DPoP proof of its key (htm, htu, iat, jti unused, ath, and the
//        server nonce while dpop_require_nonce): else 401 with a DPoP challenge
//        (error="use_dpop_nonce" + DPoP-Nonce, or "invalid_dpop_proof"); 200
//        adds "dpop_jkt". DPoP: oidc-provider's features.dPoP with a nonce
//        secret; client kstlib-dpop gets DPoP-bound tokens only
//        (dpop_bound_access_tokens); setting dpop_require_nonce (default true).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';
// -- DPoP (RFC 9449, issue 14 item 2) --
import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } from 'jose';
import ServerChallenge from 'oidc-provider/lib/helpers/challenge.js';
// -- end DPoP --

const oidcErrors = errors; // issue 13's name for the same module

const HOST = '127.0.0.1';
const REQUESTED_PORT = Number.parseInt(process.env.IDP_PORT ?? process.argv[2] ?? '0', 10);
const READY_FILE = process.env.IDP_READY_FILE || undefined;
const STATE_FILE = process.env.IDP_STATE_FILE || undefined;

if (!Number.isInteger(REQUESTED_PORT) || REQUESTED_PORT < 0 || REQUESTED_PORT > 65535) {
  console.error(`invalid port ${process.env.IDP_PORT ?? process.argv[2]}`);
  process.exit(2);
}

// ---------------------------------------------------------------- clients

// The private_key_jwt client's keys: test-only private JWKs in test-client-keys.json
// (the tests sign with them); the server registers their public halves.
const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);
const PRIVATE_KEY_JWT_PUBLIC_KEYS = JSON.parse(
  fs.readFileSync(new URL('./test-client-keys.json', import.meta.url), 'utf8'),
).keys.map((key) => Object.fromEntries(Object.entries(key).filter(([name]) => !PRIVATE_MEMBERS.has(name))));
// client_secret_jwt signs with HS256/384/512: the secret is as long as the largest hash.
const CLIENT_SECRET_JWT_SECRET = 'kstlib-client-secret-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
// Client assertion algorithms accepted (oidc-provider's default omits the 384/512 variants).
const CLIENT_AUTH_ALGS = [
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'Ed25519', 'EdDSA',
];

const DEFAULT_CLIENTS = [
  {
    client_id: 'kstlib-confidential',
    client_secret: 'kstlib-confidential-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    client_id: 'kstlib-confidential-post',
    client_secret: 'kstlib-confidential-post-secret',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    client_id: 'kstlib-public',
    token_endpoint_auth_method: 'none',
  },
  {
    client_id: 'kstlib-es256',
    client_secret: 'kstlib-es256-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  },
  {
    client_id: 'kstlib-private-key-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: PRIVATE_KEY_JWT_PUBLIC_KEYS },
  },
  {
    client_id: 'kstlib-client-secret-jwt',
    client_secret: CLIENT_SECRET_JWT_SECRET,
    token_endpoint_auth_method: 'client_secret_jwt',
  },
  // -- DPoP (RFC 9449, issue 14 item 2): only DPoP-bound access tokens --
  {
    client_id: 'kstlib-dpop',
    client_secret: 'kstlib-dpop-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    dpop_bound_access_tokens: true,
  },
].map((client) => ({
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1:8400/callback', 'http://localhost:8400/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1:8400/logged-out', 'http://localhost:8400/logged-out'],
  ...client,
}));

// ---- grants for services (issue 13): client credentials, token exchange (RFC 8693) ----
// kstlib-service: a confidential client with no user and no redirect; it may use the
// client_credentials grant and exchange a user's access token (RFC 8693).
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
// Scopes a service may ask for (added to the provider's scopes).
const SERVICE_SCOPES = ['api:read', 'api:write'];
// Test hook: a token exchange asked for this audience answers with a wrong
// issued_token_type (the client must refuse it and store nothing).
const WRONG_ISSUED_TYPE_AUDIENCE = 'urn:kstlib:test:wrong-issued-token-type';
DEFAULT_CLIENTS.push({
  client_id: 'kstlib-service',
  client_secret: 'kstlib-service-secret',
  token_endpoint_auth_method: 'client_secret_basic',
  application_type: 'web',
  grant_types: ['client_credentials', TOKEN_EXCHANGE_GRANT],
  response_types: [],
  redirect_uris: [],
  post_logout_redirect_uris: [],
});

// RFC 8693 token exchange: the subject token must be a live access token of this
// IdP (AccessToken.find, not expired, its grant not revoked); the answer is a new
// access token for the same user and grant, with the requested audience.
async function tokenExchangeHandler(ctx) {
  const { params, client } = ctx.oidc;
  const { provider } = current;
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new oidcErrors.InvalidRequest(`unsupported subject_token_type (only ${ACCESS_TOKEN_TYPE})`);
  }
  if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new oidcErrors.InvalidRequest('unsupported requested_token_type');
  }
  const subject = await provider.AccessToken.find(params.subject_token);
  if (!subject || subject.isExpired || !(await provider.Grant.find(subject.grantId))) {
    throw new oidcErrors.InvalidGrant('subject_token is invalid, expired or revoked');
  }
  const token = new provider.AccessToken({
    accountId: subject.accountId,
    client,
    grantId: subject.grantId,
    gty: 'token_exchange',
    scope: params.scope || subject.scope,
  });
  if (params.audience) token.setAudience(params.audience);
  const value = await token.save();
  const wrong = params.audience === WRONG_ISSUED_TYPE_AUDIENCE;
  ctx.body = {
    access_token: value,
    issued_token_type: wrong ? 'urn:ietf:params:oauth:token-type:refresh_token' : ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope || undefined,
  };
}

function registerServiceGrants(provider) {
  provider.registerGrantType(TOKEN_EXCHANGE_GRANT, tokenExchangeHandler, [
    'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
    'requested_token_type', 'audience', 'resource', 'scope',
  ]);
}
// ---- end of grants for services ----

// ---------------------------------------- device authorization grant (RFC 8628; issue #13)
// Clients allowed only the device grant (and refresh), always registered: kstlib-device (client_secret_basic),
// kstlib-device-public (auth method none) and kstlib-device-short, whose device codes live
// DEVICE_SHORT_TTL seconds (expiry tests). Test-only emulations, all in this block:
//  - every device authorization answer carries interval DEVICE_INTERVAL (oidc-provider sends
//    none, so a client would wait the RFC default of 5 s between polls);
//  - expired device codes stay in the store DEVICE_CODE_GRACE seconds, so a late poll gets
//    RFC 8628's expired_token (as real servers answer) rather than "device code not found";
//  - oidc-provider never answers slow_down: POST /__test__/device/slow-down {"count": n}
//    makes the next n device-code polls answer slow_down (RFC 8628 3.5).
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const DEVICE_INTERVAL = 1;
const DEVICE_SHORT_TTL = 2;
const DEVICE_CODE_GRACE = 60;
const DEVICE_CLIENTS = [
  {
    client_id: 'kstlib-device',
    client_secret: 'kstlib-device-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  { client_id: 'kstlib-device-public', token_endpoint_auth_method: 'none' },
  {
    client_id: 'kstlib-device-short',
    client_secret: 'kstlib-device-short-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  },
].map((client) => ({
  application_type: 'native',
  grant_types: [DEVICE_GRANT, 'refresh_token'],
  response_types: [],
  redirect_uris: [],
  ...client,
}));
const deviceState = { slowDown: 0 };

function deviceCodeTTL(ctx, deviceCode, client) {
  return client?.clientId === 'kstlib-device-short' ? DEVICE_SHORT_TTL : 600;
}

async function deviceSlowDown(ctx, next) {
  if (deviceState.slowDown > 0 && ctx.method === 'POST' && ctx.path === '/token'
    && ctx.state.form?.get('grant_type') === DEVICE_GRANT) {
    deviceState.slowDown -= 1;
    ctx.status = 400;
    ctx.set('cache-control', 'no-store');
    ctx.body = { error: 'slow_down', error_description: 'polling too fast (test IdP emulation)' };
    return undefined;
  }
  return next();
}

function deviceInterval(ctx, body) {
  Object.assign(body, { interval: DEVICE_INTERVAL });
}

async function deviceTestEndpoint(req, res, url) {
  if (req.method !== 'POST' || url.pathname !== '/__test__/device/slow-down') return false;
  const { count = 1 } = await readJson(req);
  if (!Number.isInteger(count) || count < 0) {
    send(res, 400, { error: 'count must be a non-negative integer' });
    return true;
  }
  deviceState.slowDown = count;
  send(res, 200, { slow_down: count });
  return true;
}
// ------------------------------------------------------ end of the device grant block

const CLIENTS = process.env.IDP_CLIENTS ? JSON.parse(process.env.IDP_CLIENTS) : DEFAULT_CLIENTS;
// Device grant block: the device clients are registered whatever IDP_CLIENTS lists, and
// the public client of the quick start (the docs' my-app) may use the device grant too.
for (const client of DEVICE_CLIENTS) {
  if (!CLIENTS.some((c) => c.client_id === client.client_id)) CLIENTS.push(client);
}
for (const client of CLIENTS) {
  if (client.client_id === 'kstlib-public' && !client.grant_types?.includes(DEVICE_GRANT)) {
    client.grant_types = [...(client.grant_types ?? ['authorization_code']), DEVICE_GRANT];
  }
}

// --------------------------------------------------------------- settings

function intFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${raw}`);
  }
  return value;
}

const settings = {
  access_token_ttl: intFromEnv('IDP_ACCESS_TOKEN_TTL', 3600),
  id_token_ttl: intFromEnv('IDP_ID_TOKEN_TTL', 3600),
  refresh_token_ttl: intFromEnv('IDP_REFRESH_TOKEN_TTL', 14 * 24 * 3600),
  // oidc-provider itself accepts client_secret_basic and client_secret_post
  // interchangeably for a client registered with either; strict mode refuses
  // the method the client is not registered for (see strictClientAuth).
  strict_client_auth: process.env.IDP_STRICT_CLIENT_AUTH !== '0',
  // milliseconds the token endpoint waits before answering (a slow IdP)
  token_delay_ms: 0,
  // --- issue 14 (PAR/JAR/resource indicators) ---
  // seconds a pushed authorization request lives (oidc-provider's own: 60)
  par_ttl: 60,
  // --- end issue 14 ---
  // -- DPoP (issue 14 item 2): every DPoP proof (token endpoint, userinfo, the API)
  // must carry a server nonce (use_dpop_nonce + DPoP-Nonce otherwise).
  dpop_require_nonce: true,
};

// -- DPoP (RFC 9449, issue 14 item 2) --
// One nonce secret for the provider's endpoints and the test API (same nonces: one origin).
const DPOP_NONCE_SECRET = crypto.randomBytes(32);
const dpopNonces = new ServerChallenge(DPOP_NONCE_SECRET, 'DPoP');
const DPOP_ALGS = ['ES256', 'ES384', 'EdDSA', 'PS256', 'RS256'];
const seenProofJtis = new Map(); // jti -> expiry (epoch s): replay detection of the API
// -- end DPoP --

// --- issue 14: FAPI 2.0 mode, resource indicators (RFC 8707) ---------------
const FAPI_PROFILE = process.env.IDP_FAPI || undefined;
if (FAPI_PROFILE !== undefined && FAPI_PROFILE !== '2.0') {
  console.error(`IDP_FAPI must be 2.0, got ${FAPI_PROFILE}`);
  process.exit(2);
}
// Resource servers the IdP knows: any absolute https URI under this prefix.
const RESOURCE_PREFIX = 'https://rs.kstlib.test/';
// The resource parameters last received, per route (GET /__test__/resources).
const receivedResources = new Map();

function recordResources(ctx) {
  try {
    const route = ctx.oidc?.route;
    const value = ctx.oidc?.params?.resource;
    if (route && value !== undefined) receivedResources.set(route, [value].flat());
  } catch {
    // ctx.oidc may throw before the route is resolved
  }
}
// --- end issue 14 ---

// ---------------------------------------------------------- persisted state

const state = {
  generation: 0,
  activeKeys: [], // private JWKs used for signing
  retiredKeys: [], // private JWKs still published (verify only)
  cookieKeys: [],
  entries: new Map(), // "Model:id" -> { payload, exp (epoch ms) | null }
};

function loadState() {
  if (!STATE_FILE || !fs.existsSync(STATE_FILE)) return false;
  const saved = JSON.parse(fs.readFileSync(STATE_FILE, 'utf8'));
  state.generation = saved.generation;
  state.activeKeys = saved.activeKeys;
  state.retiredKeys = saved.retiredKeys;
  state.cookieKeys = saved.cookieKeys;
  state.entries = new Map(saved.entries);
  Object.assign(settings, saved.settings ?? {});
  return true;
}

// Writes are coalesced (at most every 100 ms) and flushed synchronously when
// the process exits, so a restart (SIGTERM / stdin EOF) never loses state.
let saveTimer;

function saveState() {
  if (!STATE_FILE || saveTimer) return;
  saveTimer = setTimeout(flushState, 100);
}

function flushState() {
  if (saveTimer) clearTimeout(saveTimer);
  saveTimer = undefined;
  if (!STATE_FILE) return;
  const now = Date.now();
  for (const [key, entry] of state.entries) {
    if (entry.exp !== null && entry.exp <= now) state.entries.delete(key);
  }
  const tmp = `${STATE_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({
    generation: state.generation,
    activeKeys: state.activeKeys,
    retiredKeys: state.retiredKeys,
    cookieKeys: state.cookieKeys,
    entries: [...state.entries],
    settings,
  }));
  fs.renameSync(tmp, STATE_FILE);
}

// ------------------------------------------------------------------- keys

function generateSigningKeys(generation) {
  const tag = `${generation}-${crypto.randomBytes(4).toString('hex')}`;
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rs256-${tag}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `es256-${tag}`, alg: 'ES256', use: 'sig' },
  ];
}

function rotateKeys({ keepOld = true } = {}) {
  state.generation += 1;
  state.retiredKeys = keepOld ? [...state.activeKeys, ...state.retiredKeys] : [];
  state.activeKeys = generateSigningKeys(state.generation);
}

function keyInfo() {
  const describe = ({ kid, alg, kty }) => ({ kid, alg, kty });
  return {
    generation: state.generation,
    active: state.activeKeys.map(describe),
    retired: state.retiredKeys.map(describe),
  };
}

// ---------------------------------------------------------------- adapter
// Map-backed, shared by every Provider instance built by this process (so a
// key rotation, which builds a new Provider, keeps all grants/sessions/tokens),
// optionally persisted to IDP_STATE_FILE after each write.

function liveEntry(key) {
  const entry = state.entries.get(key);
  if (!entry) return undefined;
  if (entry.exp !== null && entry.exp <= Date.now()) {
    state.entries.delete(key);
    return undefined;
  }
  return entry;
}

class StoreAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    state.entries.set(this.key(id), {
      payload: structuredClone(payload),
      exp: typeof expiresIn === 'number' ? Date.now() + (expiresIn * 1000) : null,
    });
    saveState();
  }

  async find(id) {
    const entry = liveEntry(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  #findBy(predicate) {
    const prefix = `${this.model}:`;
    for (const key of state.entries.keys()) {
      if (key.startsWith(prefix)) {
        const entry = liveEntry(key);
        if (entry && predicate(entry.payload)) return structuredClone(entry.payload);
      }
    }
    return undefined;
  }

  async findByUid(uid) {
    return this.#findBy((payload) => payload.uid === uid);
  }

  async findByUserCode(userCode) {
    return this.#findBy((payload) => payload.userCode === userCode);
  }

  async consume(id) {
    const entry = liveEntry(this.key(id));
    if (entry) {
      entry.payload.consumed = Math.floor(Date.now() / 1000);
      saveState();
    }
  }

  async destroy(id) {
    state.entries.delete(this.key(id));
    saveState();
  }

  async revokeByGrantId(grantId) {
    const prefix = `${this.model}:`;
    for (const [key, entry] of state.entries) {
      if (key.startsWith(prefix) && entry.payload.grantId === grantId) {
        state.entries.delete(key);
      }
    }
    saveState();
  }
}

// Device grant block (see above): expired device codes are kept DEVICE_CODE_GRACE seconds.
class DeviceGraceAdapter extends StoreAdapter {
  async upsert(id, payload, expiresIn) {
    const keep = this.model === 'DeviceCode' && typeof expiresIn === 'number';
    return super.upsert(id, payload, keep ? expiresIn + DEVICE_CODE_GRACE : expiresIn);
  }
}

// --------------------------------------------------------------- accounts

function findAccount(ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: `${sub.charAt(0).toUpperCase()}${sub.slice(1)} Test`,
        preferred_username: sub,
        email: `${sub}@example.test`,
        email_verified: true,
      };
    },
  };
}

// ------------------------------------------------------------------ stats

const stats = new Map();

function bump(key) {
  stats.set(key, (stats.get(key) ?? 0) + 1);
}

// Counts one finished provider request: "<route>" and "<route>:<status>"
// (route = oidc-provider route name: discovery, jwks, authorization, resume,
// interaction, submit, token, userinfo, revocation, introspection,
// end_session, ...; "unmatched" for unknown paths), and for the token
// endpoint also "token:<grant_type>" and "token:<grant_type>:<status>".
function countRequest(ctx, status) {
  let route = ROUTE_BY_PATH.get(`${ctx.method} ${ctx.path}`) ?? 'unmatched';
  let grantType = ctx.state.form?.get('grant_type') ?? undefined;
  try {
    if (ctx.oidc) {
      route = ctx.oidc.route ?? route;
      if (route === 'token') grantType = ctx.oidc.params?.grant_type ?? grantType;
    }
  } catch {
    // ctx.oidc may throw before the route is resolved
  }
  bump(route);
  bump(`${route}:${status}`);
  if (route === 'token') {
    const gt = grantType || 'unknown';
    bump(`token:${gt}`);
    bump(`token:${gt}:${status}`);
  }
}

// ---------------------------------------------------- strict client auth

// Requests rejected before reaching oidc-provider are still counted by route.
const ROUTE_BY_PATH = new Map([
  ['POST /token', 'token'],
  ['POST /token/revocation', 'revocation'],
  ['POST /token/introspection', 'introspection'],
  ['POST /request', 'pushed_authorization_request'],
]);

function basicClientId(authorization) {
  const match = /^Basic +(\S+)$/i.exec(authorization ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

// Reads the form of a client-authenticated endpoint (handing the bytes to
// oidc-provider through req.body, which it supports), remembers it in
// ctx.state.form for the stats, and in strict mode answers invalid_client
// when a client_secret_basic client posts its secret in the body or a
// client_secret_post client uses HTTP Basic.
async function strictClientAuth(ctx, next) {
  if (!ROUTE_BY_PATH.has(`${ctx.method} ${ctx.path}`) || !ctx.is('application/x-www-form-urlencoded')) {
    return next();
  }
  const raw = await readRawBody(ctx.req);
  ctx.req.body = raw;
  const form = new URLSearchParams(raw.toString('utf8'));
  ctx.state.form = form;

  if (settings.strict_client_auth) {
    const fromBasic = basicClientId(ctx.get('authorization'));
    const clientId = fromBasic ?? form.get('client_id');
    const registered = CLIENTS.find((c) => c.client_id === clientId)?.token_endpoint_auth_method;
    let used;
    if (fromBasic !== undefined) used = 'client_secret_basic';
    else if (form.has('client_secret')) used = 'client_secret_post';
    const secretMethods = ['client_secret_basic', 'client_secret_post'];
    if (used && secretMethods.includes(registered) && used !== registered) {
      ctx.status = 401;
      ctx.set('cache-control', 'no-store');
      if (used === 'client_secret_basic') ctx.set('www-authenticate', 'Basic realm="kstlib-test-idp"');
      ctx.body = {
        error: 'invalid_client',
        error_description: `client ${clientId} is registered for ${registered} but used ${used} (strict test IdP)`,
      };
      return undefined;
    }
  }
  return next();
}

// --- issue 14: a pushed authorization request that lives settings.par_ttl s ---
async function parTtl(ctx, next) {
  await next();
  if (ctx.method !== 'POST' || ctx.path !== '/request' || ctx.status !== 201) return;
  if (settings.par_ttl >= 60) return;
  const id = String(ctx.body?.request_uri ?? '').split(':').pop();
  const entry = state.entries.get(`PushedAuthorizationRequest:${id}`);
  if (!entry) return;
  entry.exp = Date.now() + (settings.par_ttl * 1000);
  entry.payload.exp = Math.floor(Date.now() / 1000) + settings.par_ttl;
  ctx.body = { ...ctx.body, expires_in: settings.par_ttl };
  saveState();
}
// --- end issue 14 ---

// --------------------------------------------------------------- provider

let issuer;
let current; // { provider, handler }

function buildProvider() {
  const keys = [
    ...state.activeKeys,
    ...state.retiredKeys.map((key) => ({ ...key, key_ops: ['verify'] })),
  ];

  const provider = new Provider(issuer, {
    adapter: DeviceGraceAdapter, // StoreAdapter + the device block's grace
    clients: CLIENTS,
    jwks: { keys },
    cookies: { keys: state.cookieKeys },
    findAccount,
    scopes: ['openid', 'profile', 'email', 'offline_access', ...SERVICE_SCOPES],
    responseTypes: ['code'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      // grants for services (issue 13)
      clientCredentials: { enabled: true },
      // -- DPoP (issue 14 item 2) --
      dPoP: {
        enabled: true,
        nonceSecret: DPOP_NONCE_SECRET,
        requireNonce: () => settings.dpop_require_nonce,
      },
      deviceFlow: { enabled: true }, // device grant block
      // --- issue 14: PAR, JAR, resource indicators, FAPI 2.0 ---
      pushedAuthorizationRequests: {
        enabled: true,
        requirePushedAuthorizationRequests: FAPI_PROFILE !== undefined,
      },
      requestObjects: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // several resources at the token endpoint: the token is for the first one
        defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : undefined),
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          if (!resourceIndicator.startsWith(RESOURCE_PREFIX)) {
            throw new errors.InvalidTarget(`unknown resource server ${resourceIndicator}`);
          }
          return {
            scope: 'openid profile email offline_access',
            audience: resourceIndicator,
            accessTokenFormat: 'opaque',
            accessTokenTTL: settings.access_token_ttl,
          };
        },
      },
      ...(FAPI_PROFILE ? { fapi: { enabled: true, profile: FAPI_PROFILE } } : {}),
      // --- end issue 14 ---
    },
    enabledJWA: { clientAuthSigningAlgValues: CLIENT_AUTH_ALGS, dPoPSigningAlgValues: DPOP_ALGS },
    // Default: only with offline_access (which oidc-provider drops unless
    // prompt=consent). Here: every client allowed the refresh_token grant.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: () => settings.access_token_ttl,
      ClientCredentials: () => settings.access_token_ttl, // issue 13
      IdToken: () => settings.id_token_ttl,
      RefreshToken: () => settings.refresh_token_ttl,
      AuthorizationCode: 60,
      PushedAuthorizationRequest: 60, // issue 14: shortened by settings.par_ttl (parTtl)
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      DeviceCode: deviceCodeTTL, // device grant block
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head>`
        + `<body><h1>oops! something went wrong</h1><pre id="error">${
          Object.entries(out).map(([k, v]) => `${k}: ${String(v).replace(/[<>&"]/g, '')}`).join('\n')
        }</pre></body></html>`;
    },
  });

  provider.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      countRequest(ctx, err?.status ?? err?.statusCode ?? 500);
      throw err;
    }
    countRequest(ctx, ctx.status);
    recordResources(ctx); // issue 14
  });
  provider.use(strictClientAuth);
  provider.use(deviceSlowDown); // device grant block
  provider.on('device_authorization.success', deviceInterval); // device grant block
  provider.use(parTtl); // issue 14
  provider.use(async (ctx, next) => {
    if (settings.token_delay_ms > 0 && ctx.method === 'POST' && ctx.path === '/token') {
      await new Promise((resolve) => { setTimeout(resolve, settings.token_delay_ms); });
    }
    return next();
  });

  registerServiceGrants(provider); // issue 13: token exchange

  provider.on('server_error', (ctx, err) => {
    console.error('server_error', err);
  });

  return { provider, handler: provider.callback() };
}

// -------------------------------------------------------- test endpoints

const MAX_BODY = 1024 * 1024;

async function readRawBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function readBody(req) {
  return (await readRawBody(req)).toString('utf8');
}

async function readJson(req) {
  const raw = await readBody(req);
  if (!raw.trim()) return {};
  return JSON.parse(raw);
}

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : payload);
}

// -- DPoP (RFC 9449, issue 14 item 2) --
// Checks the DPoP proof of an API request for `accessToken` (RFC 9449 section 4.3 and 7):
// typ dpop+jwt, an allowed alg, the embedded public jwk's signature, htm, htu (no query),
// iat recent, jti unused, ath, and the server nonce when required. Returns the jwk
// thumbprint, or throws {challenge: 'use_dpop_nonce' | 'invalid_dpop_proof', message}.
async function checkDpopProof(req, url, accessToken) {
  const proof = req.headers.dpop;
  if (typeof proof !== 'string' || !proof) throw { challenge: 'invalid_dpop_proof', message: 'no DPoP proof' };
  let payload;
  let protectedHeader;
  try {
    ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { algorithms: DPOP_ALGS, typ: 'dpop+jwt' }));
  } catch (err) {
    throw { challenge: 'invalid_dpop_proof', message: `DPoP proof invalid (${err.code ?? err.message})` };
  }
  const now = Math.floor(Date.now() / 1000);
  const fail = (message) => { throw { challenge: 'invalid_dpop_proof', message }; };
  if (typeof payload.jti !== 'string' || !payload.jti) fail('DPoP proof has no jti');
  if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > 300) fail('DPoP proof iat is not recent');
  if (payload.htm !== req.method) fail('DPoP proof htm mismatch');
  if (payload.htu !== `${issuer}${url.pathname}`) fail('DPoP proof htu mismatch');
  const ath = crypto.createHash('sha256').update(accessToken).digest('base64url');
  if (payload.ath !== ath) fail('DPoP proof ath mismatch');
  if (protectedHeader.jwk.d !== undefined) fail('DPoP proof jwk is a private key');
  if (settings.dpop_require_nonce && !(typeof payload.nonce === 'string' && dpopNonces.checkChallenge(payload.nonce))) {
    throw { challenge: 'use_dpop_nonce', message: 'a DPoP nonce is required' };
  }
  for (const [jti, exp] of seenProofJtis) if (exp < now) seenProofJtis.delete(jti);
  if (seenProofJtis.has(payload.jti)) fail('DPoP proof jti replayed');
  seenProofJtis.set(payload.jti, now + 600);
  return calculateJwkThumbprint(protectedHeader.jwk);
}
// -- end DPoP --

async function protectedApi(req, res, url) {
  const raw = await readBody(req);
  const match = /^(Bearer|DPoP)[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(req.headers.authorization ?? '');
  let token;
  let dpopJkt = null;
  if (match) {
    const { provider } = current;
    token = await provider.AccessToken.find(match[2]);
    if (token && (token.isExpired || !(await provider.Grant.find(token.grantId)))) {
      token = undefined;
    }
    // issue 13: a client-credentials token (no user, no grant) is accepted too
    if (!token) {
      const service = await provider.ClientCredentials.find(match[2]);
      if (service && !service.isExpired) token = service;
    }
    // -- DPoP (issue 14 item 2): a DPoP-bound token only with a valid proof of its key --
    const scheme = match[1].toLowerCase();
    if (token && (token.jkt || scheme === 'dpop')) {
      let problem;
      if (!token.jkt || scheme !== 'dpop') {
        problem = { challenge: 'invalid_token', message: token.jkt ? 'a DPoP-bound token needs the DPoP scheme' : 'not a DPoP-bound token' };
      } else {
        try {
          dpopJkt = await checkDpopProof(req, url, match[2]);
          if (dpopJkt !== token.jkt) problem = { challenge: 'invalid_dpop_proof', message: 'DPoP proof key is not the token\'s key' };
        } catch (err) {
          if (!err?.challenge) throw err;
          problem = err;
        }
      }
      if (problem) {
        bump('api');
        bump(`api:401:${problem.challenge}`);
        const headers = {
          'www-authenticate': `DPoP algs="${DPOP_ALGS.join(' ')}", error="${problem.challenge}", error_description="${problem.message}"`,
        };
        if (problem.challenge === 'use_dpop_nonce') headers['dpop-nonce'] = dpopNonces.nextChallenge();
        send(res, 401, { error: problem.challenge, error_description: problem.message }, headers);
        return;
      }
    }
    // -- end DPoP --
  }

  if (!token) {
    bump('api');
    bump('api:401');
    const description = match ? 'the access token is invalid, expired or revoked' : 'no bearer access token';
    send(res, 401, { error: 'invalid_token', error_description: description }, {
      'www-authenticate': `Bearer realm="kstlib-test-api", error="invalid_token", error_description="${description}"`,
    });
    return;
  }

  let body = null;
  if (raw !== '') {
    try {
      body = JSON.parse(raw);
    } catch {
      body = raw;
    }
  }

  bump('api');
  bump('api:200');
  send(res, 200, {
    sub: token.accountId ?? null,
    ...(dpopJkt ? { dpop_jkt: dpopJkt } : {}),
    client_id: token.clientId,
    scope: token.scope ?? null,
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    body,
    ...(token.aud ? { aud: token.aud } : {}), // issue 13: the audience of an exchanged token
  });
}

async function testEndpoint(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  if (await deviceTestEndpoint(req, res, url)) return; // device grant block
  if (url.pathname === '/__test__/api' || url.pathname.startsWith('/__test__/api/')) {
    await protectedApi(req, res, url);
    return;
  }
  switch (route) {
    case 'GET /__test__/health':
      send(res, 200, { ok: true, issuer, pid: process.pid });
      return;
    case 'GET /__test__/stats':
      send(res, 200, Object.fromEntries([...stats].sort()));
      return;
    case 'POST /__test__/stats/reset':
      stats.clear();
      send(res, 200, {});
      return;
    case 'GET /__test__/keys':
      send(res, 200, keyInfo());
      return;
    case 'POST /__test__/rotate-keys': {
      const { keep_old: keepOld = true } = await readJson(req);
      rotateKeys({ keepOld: keepOld !== false });
      current = buildProvider();
      flushState();
      console.log(`keys rotated: ${JSON.stringify(keyInfo())}`);
      send(res, 200, keyInfo());
      return;
    }
    case 'GET /__test__/config':
      send(res, 200, settings);
      return;
    case 'POST /__test__/config': {
      const update = await readJson(req);
      for (const [name, value] of Object.entries(update)) {
        if (!(name in settings)) {
          send(res, 400, { error: `unknown setting ${name}` });
          return;
        }
        const minimum = name === 'token_delay_ms' ? 0 : 1;
        if (typeof settings[name] === 'boolean' ? typeof value !== 'boolean' : !(Number.isInteger(value) && value >= minimum)) {
          send(res, 400, { error: `${name} must be a ${typeof settings[name] === 'boolean' ? 'boolean' : 'positive integer'}` });
          return;
        }
      }
      Object.assign(settings, update);
      saveState();
      send(res, 200, settings);
      return;
    }
    case 'GET /__test__/clients':
      send(res, 200, CLIENTS);
      return;
    // --- issue 14 ---
    case 'GET /__test__/resources':
      send(res, 200, Object.fromEntries(receivedResources));
      return;
    case 'POST /__test__/resources/reset':
      receivedResources.clear();
      send(res, 200, {});
      return;
    // --- end issue 14 ---
    default:
      send(res, 404, { error: 'not_found', route });
  }
}

// ----------------------------------------------------------------- server

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://placeholder');
  if (url.pathname.startsWith('/__test__/')) {
    testEndpoint(req, res, url).catch((err) => {
      console.error('test endpoint error', err);
      if (!res.headersSent) send(res, err.status ?? 500, { error: String(err.message ?? err) });
      else res.destroy();
    });
    return;
  }
  if (!current) {
    res.writeHead(503, { 'retry-after': '1' });
    res.end();
    return;
  }
  current.handler(req, res);
});

server.keepAliveTimeout = 5000;

server.on('error', (err) => {
  console.error(`server error: ${err.stack ?? err}`);
  process.exit(1);
});

server.listen(REQUESTED_PORT, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;

  if (!loadState()) {
    state.cookieKeys = [crypto.randomBytes(32).toString('base64url')];
    rotateKeys({ keepOld: false });
  }
  current = buildProvider();
  flushState();

  if (READY_FILE) {
    const tmp = `${READY_FILE}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ port, issuer, pid: process.pid }));
    fs.renameSync(tmp, READY_FILE);
  }
  console.log(`test IdP listening, issuer ${issuer}, keys ${JSON.stringify(keyInfo())}`);
});

let shuttingDown = false;

function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  console.log(`received ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('exit', () => {
  if (saveTimer) flushState();
});
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

if (process.env.IDP_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => shutdown('stdin EOF'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
