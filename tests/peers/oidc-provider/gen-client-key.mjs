// Makes the TEST-ONLY ES256 key pair of the private_key_jwt client
// `peer-pkjwt`, in the crate's tests/data (or the folder given):
//
//   node tests/peers/oidc-provider/gen-client-key.mjs [FOLDER]
//
// peer-pkjwt.private.pem       PKCS#8 private key; the Rust tests sign with it
// peer-pkjwt.public.jwks.json  the public key as a JWKS, which the server
//                              registers for the client; its kid is the key's
//                              RFC 7638 thumbprint
//
// It refuses to overwrite existing files: a new pair means a deliberate
// `rm` first. Plain node, no npm packages needed.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const folder = process.argv[2] || new URL('../../data/', import.meta.url).pathname;
const privatePath = join(folder, 'peer-pkjwt.private.pem');
const jwksPath = join(folder, 'peer-pkjwt.public.jwks.json');
for (const path of [privatePath, jwksPath]) {
  if (existsSync(path)) {
    console.error(`${path} exists; remove both files first to make a new pair`);
    process.exit(1);
  }
}

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = publicKey.export({ format: 'jwk' });
// RFC 7638: SHA-256 over the required members, in lexicographic order.
const thumbprint = createHash('sha256')
  .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
  .digest('base64url');

writeFileSync(privatePath, privateKey.export({ format: 'pem', type: 'pkcs8' }));
const jwks = { keys: [{ ...jwk, kid: thumbprint, alg: 'ES256', use: 'sig' }] };
writeFileSync(jwksPath, `${JSON.stringify(jwks, null, 2)}\n`);
console.log(`wrote ${privatePath} and ${jwksPath} (kid ${thumbprint})`);
