// The resource owner password credentials grant (RFC 6749 section 4.3).
//
// oidc-provider has no ROPC grant of its own; its documentation leaves it to
// `provider.registerGrantType`. This handler is the only token-minting code
// of the harness: it checks the user, records a provider Grant, and mints the
// access and refresh tokens with the provider's own models. Everything that
// happens to those tokens later (the refresh_token grant, rotation, reuse
// detection, expiry, revocation, introspection) is oidc-provider's code, which
// is what the interoperability tests are about.

import { errors } from 'oidc-provider';
import { API_SCOPES, DEFAULT_RESOURCE, checkPassword } from './fixtures.mjs';

const PARAMETERS = ['username', 'password', 'scope', 'resource'];

/**
 * @param {import('oidc-provider').default} provider
 * @param {(ctx: unknown, indicator: string) => Promise<object>} resourceServerInfo
 */
export function registerPasswordGrant(provider, resourceServerInfo) {
  async function passwordGrant(ctx) {
    const { params, client } = ctx.oidc;

    const missing = ['username', 'password'].filter((name) => !params[name]);
    if (missing.length > 0) {
      throw new errors.InvalidRequest(`missing required parameter(s) (${missing.join(',')})`);
    }
    if (!checkPassword(params.username, params.password)) {
      // The client sees oidc-provider's generic invalid_grant description;
      // this detail goes to the log only.
      throw new errors.InvalidGrant('invalid resource owner credentials');
    }
    if (Array.isArray(params.resource)) {
      throw new errors.InvalidTarget('only a single resource indicator value is supported for this grant type');
    }

    // Scopes: none asked means every API scope; offline_access is accepted
    // and changes nothing; anything else unknown is refused by name.
    const resource = params.resource || DEFAULT_RESOURCE;
    const rsInfo = await resourceServerInfo(ctx, resource); // throws invalid_target
    const requested = params.scope ? params.scope.split(' ').filter(Boolean) : [...API_SCOPES];
    const unknown = requested.find((s) => !API_SCOPES.includes(s) && s !== 'offline_access');
    if (unknown !== undefined) {
      throw new errors.InvalidScope('requested scope is not allowed', unknown);
    }
    const apiScope = requested.filter((s) => API_SCOPES.includes(s)).join(' ');

    const grant = new provider.Grant({ accountId: params.username, clientId: client.clientId });
    grant.addResourceScope(resource, apiScope);
    if (requested.includes('offline_access')) grant.addOIDCScope('offline_access');
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const accessToken = new provider.AccessToken({
      accountId: params.username,
      client,
      grantId,
      gty: 'password',
      scope: apiScope,
    });
    accessToken.resourceServer = new provider.ResourceServer(resource, rsInfo);
    ctx.oidc.entity('AccessToken', accessToken);
    const accessTokenValue = await accessToken.save();

    // A refresh token whenever the client may use the refresh_token grant
    // (no offline_access needed). Its `resource` lets the provider's
    // refresh_token grant mint access tokens for the same audience.
    let refreshTokenValue;
    if (client.grantTypeAllowed('refresh_token')) {
      const refreshToken = new provider.RefreshToken({
        accountId: params.username,
        client,
        grantId,
        gty: 'password',
        resource,
        rotations: 0,
        scope: requested.join(' '),
      });
      ctx.oidc.entity('RefreshToken', refreshToken);
      refreshTokenValue = await refreshToken.save();
    }

    const body = {
      access_token: accessTokenValue,
      expires_in: accessToken.expiration,
      refresh_token: refreshTokenValue,
      scope: accessToken.scope || undefined,
      token_type: accessToken.tokenType,
    };
    ctx.body = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
  }

  provider.registerGrantType('password', passwordGrant, PARAMETERS);
}
