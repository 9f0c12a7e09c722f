// A real OpenID Provider (the certified `oidc-provider` package) for the single sign-on tests.
// Usage: node provider.mjs CONFIG.json. The file says {port, issuer, clients: [...], accounts: {login: claims}}
// and may say deviceFlow: false (a provider without the device login).
// Its development login form takes any password; the account is the claims stored under the login typed.
// It prints "listening ISSUER" once it answers.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts || {};

const provider = new Provider(config.issuer, {
  clients: config.clients,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: config.deviceFlow !== false },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true },
  ttl: { IdToken: config.idTokenTtl || 3600 },
  cookies: { keys: ['labcloud-test-cookie-key'] },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening ${config.issuer}`);
});
