// Run-time knobs of the harness. Each test picks the lifetimes and the
// refresh-token policy it needs through the environment of `start.sh`; they
// are read once, checked, and never change while the server runs.

const ROTATE_RT_VALUES = ['always', 'never', 'policy'];
const AT_FORMAT_VALUES = ['opaque', 'jwt'];

function positiveInteger(name, raw, fallback) {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer (seconds), got ${JSON.stringify(raw)}`);
  }
  return value;
}

function oneOf(name, raw, values, fallback) {
  if (raw === undefined || raw === '') return fallback;
  if (!values.includes(raw)) {
    throw new Error(`${name} must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/**
 * @param {string[]} argv  process.argv.slice(2): [PORT]
 * @param {Record<string, string | undefined>} env
 */
export function readKnobs(argv, env) {
  const port = positiveInteger('PORT', argv[0] ?? env.PORT, 9400);
  if (port > 65535) throw new Error(`PORT out of range: ${port}`);
  return {
    port,
    host: '127.0.0.1', // loopback only, always
    // Access token lifetime for every grant, seconds.
    atTtl: positiveInteger('AT_TTL', env.AT_TTL, 300),
    // Refresh token lifetime, seconds; a rotated refresh token starts afresh.
    rtTtl: positiveInteger('RT_TTL', env.RT_TTL, 3600),
    // always: every refresh consumes the refresh token and returns a new one;
    // never: the same refresh token comes back; policy: oidc-provider's default.
    rotateRt: oneOf('ROTATE_RT', env.ROTATE_RT, ROTATE_RT_VALUES, 'always'),
    // Format of access tokens for the default resource (urn:peer:api).
    atFormat: oneOf('AT_FORMAT', env.AT_FORMAT, AT_FORMAT_VALUES, 'opaque'),
    // DPOP_NONCE=1: the token endpoint demands a DPoP nonce (RFC 9449 §8)
    // of every DPoP token request. DPoP itself is always on.
    dpopNonce: env.DPOP_NONCE === '1',
    // MTLS_DIR=<folder> and MTLS_PORT=<port>: mutual TLS (RFC 8705) on a
    // second, HTTPS listener at MTLS_PORT, with ca.pem (the CA whose client
    // certificates are trusted), server.pem and server.key from the folder,
    // and the tls_client_auth client peer-mtls (subject CN=peer-mtls).
    mtlsDir: env.MTLS_DIR || undefined,
    mtlsPort: env.MTLS_DIR ? positiveInteger('MTLS_PORT', env.MTLS_PORT, undefined) : undefined,
    // QUIET=1: no request log on stdout (the READY line is still printed).
    quiet: env.QUIET === '1',
    // Folder with the test keys registered here (start.sh points it at the
    // crate's tests/data).
    testData: env.PEER_TEST_DATA || new URL('../../../data/', import.meta.url).pathname,
  };
}
