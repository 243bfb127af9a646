import { readFileSync } from 'node:fs';
import type { ClientConfig } from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';

/** fleet_tls_*: files for a TLS connection with certificate checks (empty: from the URL alone). */
export interface TlsFiles { ca: string; cert: string; key: string }

/**
 * A pg client configuration from the URL and the TLS files. With any file given, TLS is on
 * and the server's certificate is checked against the CA (and its name against the host).
 */
export function clientConfig(url: string, tls: TlsFiles, application: string): ClientConfig {
  const base = { application_name: application, connectionTimeoutMillis: 10_000, keepAlive: true };
  if (!(tls.ca || tls.cert || tls.key)) return { ...base, connectionString: url };
  // Parsed here: pg lets the URL's own ssl settings replace a configured ssl object.
  const { ssl: _fromUrl, ...fromUrl } = parseIntoClientConfig(url);
  const ssl = {
    rejectUnauthorized: true,
    ...(tls.ca ? { ca: readFileSync(tls.ca, 'utf8') } : {}),
    ...(tls.cert ? { cert: readFileSync(tls.cert, 'utf8') } : {}),
    ...(tls.key ? { key: readFileSync(tls.key, 'utf8') } : {}),
  };
  return { ...base, ...fromUrl, ssl } as ClientConfig;
}

export const tlsOf = (cfg: { fleet_tls_ca: string; fleet_tls_cert: string; fleet_tls_key: string }): TlsFiles => ({ ca: cfg.fleet_tls_ca, cert: cfg.fleet_tls_cert, key: cfg.fleet_tls_key });
