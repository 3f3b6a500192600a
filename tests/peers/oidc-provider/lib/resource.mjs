// A small protected resource on the same port as the authorization server,
// so that a test can call an API with the tokens it got (RFC 6750):
//
//   GET|POST /api/whoami   any valid access token
//   GET|POST /api/read     needs scope api:read
//   GET|POST /api/write    needs scope api:write
//
// JWT access tokens are verified locally against the provider's /jwks; opaque
// ones through the provider's introspection endpoint, as a separate resource
// server would. Errors follow RFC 6750 section 3: a WWW-Authenticate: Bearer
// challenge and a small JSON body.

import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import { RESOURCE_SERVER_CLIENT } from './fixtures.mjs';

const ROUTES = new Map([
  ['/api/whoami', null],
  ['/api/read', 'api:read'],
  ['/api/write', 'api:write'],
]);
const REALM = 'peer-api';
const NOT_ACTIVE = 'access token not active (expired, revoked or unknown)';

/**
 * @param {{ issuer: string, audiences: string[], log: (...args: unknown[]) => void }} options
 * @returns a Koa middleware for provider.use()
 */
export function protectedResource({ issuer, audiences, log }) {
  const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));
  const introspectionAuth = 'Basic '
    + Buffer.from(`${RESOURCE_SERVER_CLIENT.id}:${RESOURCE_SERVER_CLIENT.secret}`).toString('base64');

  async function verifyJwt(token) {
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer, audience: audiences, typ: 'at+jwt' });
      return { ok: true, format: 'jwt', claims: payload };
    } catch (e) {
      return { ok: false, reason: e instanceof joseErrors.JWTExpired ? 'access token expired' : 'access token invalid' };
    }
  }

  async function introspect(token) {
    const rsp = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: introspectionAuth, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    const claims = await rsp.json();
    if (!rsp.ok || !claims.active) return { ok: false, reason: NOT_ACTIVE };
    if (claims.token_type === 'refresh_token') return { ok: false, reason: 'refresh token presented as access token' };
    if (!audiences.includes(claims.aud)) return { ok: false, reason: 'access token audience mismatch' };
    return { ok: true, format: 'opaque', claims };
  }

  // A three-part token is taken for a JWT, anything else is opaque.
  const validate = (token) => (token.split('.').length === 3 ? verifyJwt(token) : introspect(token));

  function refuse(ctx, status, { error, description, scope }) {
    const params = [`realm="${REALM}"`];
    // RFC 6750 3.1: no error attributes when the request carried no token.
    if (error) params.push(`error="${error}"`, `error_description="${description}"`);
    if (scope) params.push(`scope="${scope}"`);
    ctx.status = status;
    ctx.set('WWW-Authenticate', `Bearer ${params.join(', ')}`);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { error: error ?? 'unauthorized', error_description: description };
  }

  return async function resource(ctx, next) {
    if (!ROUTES.has(ctx.path)) return next();
    if (ctx.method !== 'GET' && ctx.method !== 'POST') {
      ctx.status = 405;
      return undefined;
    }
    const authorization = ctx.get('authorization');
    if (!/^bearer(\s|$)/i.test(authorization)) {
      // No credentials, or another scheme such as Basic: a bare challenge.
      log('api 401 (no bearer token)', ctx.path);
      return refuse(ctx, 401, { description: 'bearer token required' });
    }
    const match = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
    if (!match) {
      log('api 400 (malformed bearer authorization header)', ctx.path);
      return refuse(ctx, 400, { error: 'invalid_request', description: 'malformed Bearer Authorization header' });
    }
    const result = await validate(match[1]);
    if (!result.ok) {
      log('api 401', ctx.path, result.reason);
      return refuse(ctx, 401, { error: 'invalid_token', description: result.reason });
    }
    const needed = ROUTES.get(ctx.path);
    const granted = new Set((result.claims.scope || '').split(' '));
    if (needed && !granted.has(needed)) {
      log('api 403', ctx.path, 'missing scope', needed);
      return refuse(ctx, 403, { error: 'insufficient_scope', description: `scope ${needed} required`, scope: needed });
    }
    log('api 200', ctx.path, `sub=${result.claims.sub}`);
    const { sub, client_id: clientId, scope, aud, exp } = result.claims;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      ok: true, path: ctx.path, token_format: result.format, sub, client_id: clientId, scope, aud, exp,
    };
    return undefined;
  };
}
