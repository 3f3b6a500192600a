// tower-bearer's interoperability harness: panva's oidc-provider as a real
// OAuth 2.0 authorization server on 127.0.0.1, with a small protected
// resource (/api/*) on the same port. Everything is in memory, and the
// signing keys are new on every start. TEST ONLY.
//
//   ./start.sh PORT            (installs the npm packages, then runs this file)
//   node server.mjs PORT       (from a folder where they are installed)
//
// Knobs (environment): AT_TTL, RT_TTL, ROTATE_RT, AT_FORMAT, QUIET; see
// lib/knobs.mjs and README.md. Once it accepts connections it prints one line
//
//   READY oidc-provider issuer=http://127.0.0.1:PORT at_ttl=.. rt_ttl=.. rotate_rt=.. at_format=..
//
// and then one log line per token or API request (tests count some of them:
// "token ok <grant_type>", "token error ...", and the server-side reason of a
// refused grant such as "refresh token is expired").

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import Provider, { errors } from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';
import { readKnobs } from './lib/knobs.mjs';
import { API_SCOPES, DEFAULT_RESOURCE, USERS, clients, resourceFormats } from './lib/fixtures.mjs';
import { registerPasswordGrant } from './lib/password-grant.mjs';
import { protectedResource } from './lib/resource.mjs';

let knobs;
try {
  knobs = readKnobs(process.argv.slice(2), process.env);
} catch (e) {
  console.error(`oidc-provider harness: ${e.message}`);
  process.exit(2);
}
const issuer = `http://${knobs.host}:${knobs.port}`;
const log = knobs.quiet ? () => {} : (...args) => console.log(new Date().toISOString(), ...args);

// ------------------------------------------------------------ resources
const formats = resourceFormats(knobs);

/** oidc-provider's resourceIndicators.getResourceServerInfo. */
async function resourceServerInfo(ctx, indicator) {
  const format = formats[indicator];
  if (format === undefined) throw new errors.InvalidTarget();
  return {
    scope: API_SCOPES.join(' '),
    audience: indicator,
    accessTokenTTL: knobs.atTtl,
    accessTokenFormat: format,
    ...(format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
  };
}

// ------------------------------------------------------------ signing keys
// Fresh on every start: RS256 signs JWT access tokens; ES256 is published too.
async function signingKeys() {
  const key = async (alg, kid) => {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  };
  return { keys: [await key('RS256', 'peer-rs256'), await key('ES256', 'peer-es256')] };
}

// ------------------------------------------------------------ client authentication
// What the token endpoint accepts; the mTLS methods with MTLS_DIR only.
const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'none',
  ...(knobs.mtlsDir ? ['tls_client_auth', 'self_signed_tls_client_auth'] : [])];

// ------------------------------------------------------------ refresh token rotation
// ROTATE_RT=policy leaves oidc-provider's default rotateRefreshToken function
// (a confidential client rotates only after 70 % of the lifetime).
const rotation = { always: { rotateRefreshToken: true }, never: { rotateRefreshToken: false }, policy: {} };

// ------------------------------------------------------------ oidc-provider features
// Only what the tests use is on. oidc-provider 9.x can do more, each behind
// its own entry here; a test that needs one turns it on and says so (mTLS,
// RFC 8705, is on with MTLS_DIR: see the HTTPS listener at the end).
// Other grants (token exchange, JWT bearer) are registered like the password
// grant: provider.registerGrantType(), see lib/password-grant.mjs.
const features = {
  devInteractions: { enabled: false }, // no login UI: no authorization_code flow
  clientCredentials: { enabled: true },
  // DPoP (RFC 9449): on, as oidc-provider 9 has it by default; with
  // DPOP_NONCE=1 every DPoP token request must carry a server nonce.
  dPoP: {
    enabled: true,
    ...(knobs.dpopNonce ? { nonceSecret: randomBytes(32), requireNonce: () => true } : {}),
  },
  revocation: { enabled: true },
  // Mutual TLS (RFC 8705), with MTLS_DIR: the client certificate comes from
  // the TLS socket of the HTTPS listener below (no proxy in between).
  ...(knobs.mtlsDir ? {
    mTLS: {
      enabled: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      certificateBoundAccessTokens: true,
      getCertificate: (ctx) => ctx.req.socket.getPeerX509Certificate?.() || undefined,
      certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
        && `CN=${ctx.req.socket.getPeerCertificate()?.subject?.CN}` === expected,
    },
  } : {}),
  introspection: {
    enabled: true,
    // The resource server's client may introspect any token, any other
    // client only its own.
    allowedPolicy: async (ctx, client, token) => client.clientId === 'peer-rs' || token.clientId === client.clientId,
  },
  resourceIndicators: {
    enabled: true,
    defaultResource: async (ctx, client, oneOf) => oneOf || DEFAULT_RESOURCE,
    useGrantedResource: async () => true,
    getResourceServerInfo: resourceServerInfo,
  },
};

const configuration = {
  clients: clients(knobs),
  clientAuthMethods: CLIENT_AUTH_METHODS,
  jwks: await signingKeys(),
  cookies: { keys: ['tower-bearer-peer-cookie-key'] },
  scopes: ['openid', 'offline_access'],
  async findAccount(ctx, id) {
    if (!USERS.has(id)) return undefined;
    return { accountId: id, claims: async () => ({ sub: id }) };
  },
  features,
  ...rotation[knobs.rotateRt],
  // Every lifetime set, so that none falls back to a default policy.
  ttl: {
    AccessToken: knobs.atTtl,
    ClientCredentials: knobs.atTtl,
    RefreshToken: knobs.rtTtl,
    AuthorizationCode: 60,
    BackchannelAuthenticationRequest: 600,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    PreAuthorizedCode: 600,
    Session: 14 * 24 * 3600,
  },
  pkce: { required: () => false },
};

const provider = new Provider(issuer, configuration);

// ------------------------------------------------------------ grants
registerPasswordGrant(provider, resourceServerInfo);

// ------------------------------------------------------------ request log
provider.on('grant.success', (ctx) => {
  const body = ctx.body || {};
  log('token ok', ctx.oidc.params.grant_type, `client=${ctx.oidc.client?.clientId}`,
    `expires_in=${body.expires_in}`, body.refresh_token ? 'refresh_token=yes' : '');
});
provider.on('grant.error', (ctx, err) => {
  // error_detail is the precise reason, which oidc-provider never sends to
  // the client (it answers "grant request is invalid" and the like).
  log('token error', ctx.oidc.params?.grant_type, `client=${ctx.oidc.client?.clientId}`,
    err.error, '-', err.error_detail || err.error_description);
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// ------------------------------------------------------------ protected resource
provider.use(protectedResource({ issuer, audiences: Object.keys(formats), log }));

// ------------------------------------------------------------ listen
// READY once every listener listens.
let listening = knobs.mtlsDir ? 2 : 1;
const ready = () => {
  listening -= 1;
  if (listening > 0) return;
  console.log(`READY oidc-provider issuer=${issuer} at_ttl=${knobs.atTtl} rt_ttl=${knobs.rtTtl}`
    + ` rotate_rt=${knobs.rotateRt} at_format=${knobs.atFormat}`
    + (knobs.mtlsDir ? ` mtls=https://${knobs.host}:${knobs.mtlsPort}` : ''));
};
const server = provider.listen(knobs.port, knobs.host, ready);
server.on('error', (e) => {
  console.error(`oidc-provider harness: ${e.message}`);
  process.exit(1);
});

// ------------------------------------------------------------ mutual TLS listener
// The same provider over HTTPS, asking every client for a certificate
// (requestCert) without refusing the handshake when there is none or it is
// not from the CA: oidc-provider then refuses the client (invalid_client).
let mtlsServer;
if (knobs.mtlsDir) {
  const file = (name) => readFileSync(join(knobs.mtlsDir, name));
  mtlsServer = createHttpsServer({
    key: file('server.key'),
    cert: file('server.pem'),
    ca: file('ca.pem'),
    requestCert: true,
    rejectUnauthorized: false,
  }, provider.callback());
  mtlsServer.listen(knobs.mtlsPort, knobs.host, ready);
  mtlsServer.on('error', (e) => {
    console.error(`oidc-provider harness (mTLS): ${e.message}`);
    process.exit(1);
  });
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // keep-alive clients must not hold the exit up
    mtlsServer?.closeAllConnections();
  });
}
