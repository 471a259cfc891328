// A real OpenID Connect provider for the tests: panva's oidc-provider (the certified Node implementation) on loopback.
//
//   node tests/oidc/provider.js <config.json>
//
// The config names the port, the clients (client_id, client_secret, redirect_uris) and a users file. The users file
// ({"alice": {"password", "email", "name", "groups": [...], "amr": [...], "acr"}}) is read again at every sign-in, so
// a test changes someone's groups at the identity provider by rewriting it. Sign-in is a plain HTML form at
// /interaction/<uid>; consent is implied for the configured clients. Discovery, JWKS (a fresh RSA key per run),
// signed ID tokens, PKCE and userinfo are oidc-provider's own.
//
// One test hook, for the refusal tests: POST /__test__/tamper {"mode": ...} alters the ID token of the next token
// response, re-signed with the provider's real key unless the mode is about the signature:
//   wrong-audience, expired, wrong-issuer, wrong-nonce, bad-signature (signed by a foreign key under the same kid),
//   unsigned (alg "none"), replay-previous (the ID token of the token response before, with its own nonce).
// Prints "ready <issuer>" once it listens.

import { readFileSync } from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const users = () => JSON.parse(readFileSync(config.users_file, 'utf8'));

const KID = 'pam-test-key';
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const foreign = await jose.generateKeyPair('RS256');
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: KID, alg: 'RS256', use: 'sig' };

let tamperMode = null;
let previousIdToken = null;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: client.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    require_auth_time: true,
  })),
  jwks: { keys: [signingJwk] },
  cookies: { keys: [config.cookie_key] },
  claims: {
    openid: ['sub', 'acr', 'amr'], // how the person signed in, in the ID token (RFC 8176 amr values)
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = users()[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        const [given, ...family] = (user.name || id).split(' ');
        return {
          sub: id,
          email: user.email,
          email_verified: true,
          name: user.name || id,
          given_name: given,
          family_name: family.join(' '),
          preferred_username: user.preferred_username || id,
          groups: user.groups || [],
        };
      },
    };
  },
  // The portal is a first-party client: what it asks for is granted without a consent page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const sign = (header, payload, key) => new jose.CompactSign(Buffer.from(JSON.stringify(payload)))
  .setProtectedHeader(header).sign(key);

async function tamper(idToken, mode) {
  const [headerPart, payloadPart] = idToken.split('.');
  const header = b64json(headerPart);
  const payload = b64json(payloadPart);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'wrong-audience': return sign(header, { ...payload, aud: 'some-other-client' }, privateKey);
    case 'expired': return sign(header, { ...payload, iat: now - 7200, exp: now - 3600 }, privateKey);
    case 'wrong-issuer': return sign(header, { ...payload, iss: 'http://127.0.0.1:9/' }, privateKey);
    case 'wrong-nonce': return sign(header, { ...payload, nonce: 'not-this-sign-in' }, privateKey);
    case 'bad-signature': return sign(header, payload, foreign.privateKey);
    case 'unsigned': return `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payloadPart}.`;
    case 'replay-previous': return previousIdToken;
    default: throw new Error(`unknown tamper mode ${mode}`);
  }
}

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.method === 'POST' && ctx.body && ctx.body.id_token) {
    const issued = ctx.body.id_token;
    if (tamperMode) {
      const mode = tamperMode;
      tamperMode = null;
      ctx.body = { ...ctx.body, id_token: await tamper(issued, mode) };
    }
    previousIdToken = issued;
  }
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, { error = '', login = '' } = {}) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Test identity provider</title></head><body>
<h1>Test identity provider</h1>
${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Username <input id="idp-username" name="username" value="${escape(login)}" autofocus></label>
  <label>Password <input id="idp-password" type="password" name="password"></label>
  <button id="idp-submit" type="submit">Sign in</button>
</form></body></html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, uid, submitted) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'interaction mismatch');
  if (details.prompt.name === 'consent') {
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  if (!submitted) return send(res, 200, loginPage(uid));
  const form = new URLSearchParams(await readBody(req));
  const login = form.get('username') || '';
  const user = users()[login];
  if (!user || user.password !== form.get('password')) {
    return send(res, 200, loginPage(uid, { error: 'Wrong username or password.', login }));
  }
  const result = { login: { accountId: login, amr: user.amr || ['pwd'], ...(user.acr ? { acr: user.acr } : {}) } };
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (match) return await interaction(req, res, match[1], Boolean(match[2]) && req.method === 'POST');
    if (url.pathname === '/__test__/tamper' && req.method === 'POST') {
      tamperMode = JSON.parse(await readBody(req)).mode || null;
      return send(res, 200, '{"ok":true}', 'application/json');
    }
    return handle(req, res);
  } catch (error) {
    console.error(error);
    return send(res, 500, 'identity provider error', 'text/plain');
  }
});

server.listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
