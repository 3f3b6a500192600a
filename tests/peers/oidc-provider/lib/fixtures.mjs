// Who exists on this authorization server: resource owners, clients and
// protected resources. TEST ONLY: every secret here is public, and the
// Rust tests (tests/oidc_peer*.rs) use these exact values.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Resource owners for the password grant. */
export const USERS = new Map([
  ['alice', 'alice-password'],
  ['bob', 'bob-password'],
]);

export function checkPassword(username, password) {
  return USERS.has(username) && USERS.get(username) === password;
}

/** Resource indicators (RFC 8707). A token's `aud` is its resource. */
export const DEFAULT_RESOURCE = 'urn:peer:api';
export const API_SCOPES = ['api:read', 'api:write'];

/** Access token format for each resource indicator. */
export function resourceFormats(knobs) {
  return {
    [DEFAULT_RESOURCE]: knobs.atFormat, // follows AT_FORMAT
    'urn:peer:api:jwt': 'jwt', // always a JWT (typ at+jwt, RS256)
    'urn:peer:api:opaque': 'opaque', // always opaque
  };
}

/** The client that the protected resource uses to introspect tokens. */
export const RESOURCE_SERVER_CLIENT = { id: 'peer-rs', secret: 'peer-rs-secret' };

const TOKEN_GRANTS = ['client_credentials', 'password', 'refresh_token'];

// Only the token endpoint is used: no redirects, no response types.
const backChannel = (client) => ({ response_types: [], redirect_uris: [], ...client });

export function clients(knobs) {
  const pkjwtKeys = JSON.parse(readFileSync(join(knobs.testData, 'peer-pkjwt.public.jwks.json'), 'utf8'));
  return [
    // The main confidential client. Registered for client_secret_basic;
    // oidc-provider accepts client_secret_post from it too.
    backChannel({
      client_id: 'peer-client',
      client_secret: 'peer-client-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: TOKEN_GRANTS,
    }),
    // client_credentials only: password and refresh_token are refused.
    backChannel({
      client_id: 'peer-cc-only',
      client_secret: 'peer-cc-only-secret',
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
    }),
    // RFC 6749 section 2.3.1: in a Basic header the id and the secret are
    // form-urlencoded first. Space, colon, slash, plus, percent, ampersand
    // and equals sign all have to survive that.
    backChannel({
      client_id: 'peer special:client',
      client_secret: 's3cr3t with space:colon/slash+plus%percent&amp=eq',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: TOKEN_GRANTS,
    }),
    // private_key_jwt (RFC 7523) with the ES256 key in
    // tests/data/peer-pkjwt.private.pem.
    backChannel({
      client_id: 'peer-pkjwt',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: pkjwtKeys,
      grant_types: TOKEN_GRANTS,
    }),
    // client_secret_jwt (RFC 7523, OpenID Connect Core section 9): HS256
    // assertions keyed by this secret (at least 32 bytes for HS256).
    backChannel({
      client_id: 'peer-csjwt',
      client_secret: 'peer-csjwt-secret-of-at-least-32-bytes',
      token_endpoint_auth_method: 'client_secret_jwt',
      token_endpoint_auth_signing_alg: 'HS256',
      grant_types: TOKEN_GRANTS,
    }),
    // tls_client_auth (RFC 8705 section 2.1), with the mTLS listener only
    // (MTLS_DIR): a certificate from the test's CA whose subject is
    // CN=peer-mtls.
    ...(knobs.mtlsDir ? [backChannel({
      client_id: 'peer-mtls',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: 'CN=peer-mtls',
      grant_types: ['client_credentials'],
    })] : []),
    // The protected resource's own client, for introspection only.
    backChannel({
      client_id: RESOURCE_SERVER_CLIENT.id,
      client_secret: RESOURCE_SERVER_CLIENT.secret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
    }),
  ];
}
