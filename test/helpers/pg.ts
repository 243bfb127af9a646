/**
 * A throwaway PostgreSQL cluster for one test file: initdb and pg_ctl as the `postgres` user in
 * a temporary directory, on a port of its own, listening on loopback and on a Unix socket in
 * that directory (reachable from inside a network namespace, which has its own loopback).
 * stop() stops it and removes the directory.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh } from '../../tools/lab/sh';

const SUPER_PASSWORD = 'throwaway-super';

/** The newest installed PostgreSQL's bin directory, or null. */
export function pgBin(): string | null {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(base, versions[0], 'bin') : null;
}

/** Reason to skip PostgreSQL tests, or undefined. */
export function skipUnlessPg(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (initdb runs as the postgres user)';
  if (!pgBin()) return 'PostgreSQL is not installed (scripts/setup.sh --with-test-tools installs it)';
  try { execFileSync('id', ['postgres'], { stdio: 'pipe' }); } catch { return 'no postgres user'; }
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

export class PgCluster {
  private stopped = false;
  private constructor(readonly dir: string, readonly port: number, private readonly bin: string) {}

  /** The socket directory, for URLs used inside a network namespace. */
  get socketDir(): string { return this.dir; }

  static async start(): Promise<PgCluster> {
    const bin = pgBin();
    if (!bin) throw new Error('PostgreSQL not installed');
    const dir = mkdtempSync(join(tmpdir(), 'ampere-pg-'));
    chmodSync(dir, 0o755);
    const pw = join(dir, 'pw');
    writeFileSync(pw, SUPER_PASSWORD);
    execFileSync('chown', ['-R', 'postgres:postgres', dir]);
    const c = new PgCluster(dir, await freePort(), bin);
    const asPg = (cmd: string, args: string[]) => sh('runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]);
    const init = await asPg('initdb', ['-D', join(dir, 'data'), '-U', 'postgres', '--pwfile', pw, '--auth-local=scram-sha-256', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync']);
    if (init.code !== 0) { rmSync(dir, { recursive: true, force: true }); throw new Error(`initdb: ${init.stderr}`); }
    await c.startServer();
    return c;
  }

  async startServer(): Promise<void> {
    const opts = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`;
    const r = await sh('runuser', ['-u', 'postgres', '--', join(this.bin, 'pg_ctl'), '-D', join(this.dir, 'data'), '-l', join(this.dir, 'log'), '-o', opts, '-w', 'start']);
    if (r.code !== 0) throw new Error(`pg_ctl start: ${r.stderr}${r.stdout}`);
  }

  /** Stop the server (fast: open transactions are rolled back), keeping the data. */
  async stopServer(): Promise<void> {
    await sh('runuser', ['-u', 'postgres', '--', join(this.bin, 'pg_ctl'), '-D', join(this.dir, 'data'), '-m', 'fast', '-w', 'stop']);
  }

  /** A URL for a role; socket: through the Unix socket (from any network namespace). */
  url(user = 'postgres', password = SUPER_PASSWORD, db = 'ampere', socket = true): string {
    const base = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@localhost:${this.port}/${db}`;
    return socket ? `${base}?host=${encodeURIComponent(this.dir)}` : base;
  }

  /** Run SQL as the superuser with psql (over the socket); rejects on an error. */
  async psql(sql: string, db = 'ampere'): Promise<string> {
    const r = await sh('runuser', ['-u', 'postgres', '--', 'env', `PGPASSWORD=${SUPER_PASSWORD}`, join(this.bin, 'psql'), '-h', this.dir, '-p', String(this.port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]);
    if (r.code !== 0) throw new Error(`psql: ${r.stderr}`);
    return r.stdout.trim();
  }

  /**
   * TLS on (reloaded, no restart): a CA of its own and a server certificate for localhost
   * signed by it. Returns the CA's file, for clients that check the server.
   */
  async enableTls(): Promise<string> {
    const run = async (args: string[]) => { const r = await sh('openssl', args); if (r.code !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`); };
    const f = (n: string) => join(this.dir, n);
    await run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=ampere test CA', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
    await run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', f('server.key'), '-out', f('server.csr')]);
    writeFileSync(f('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    await run(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f('san.ext'), '-out', f('server.pem')]);
    execFileSync('chown', ['postgres:postgres', f('server.key'), f('server.pem')]);
    chmodSync(f('server.key'), 0o600);
    await this.psql(`ALTER SYSTEM SET ssl_cert_file = '${f('server.pem')}'`, 'postgres');
    await this.psql(`ALTER SYSTEM SET ssl_key_file = '${f('server.key')}'`, 'postgres');
    await this.psql(`ALTER SYSTEM SET ssl = on`, 'postgres');
    await this.psql(`SELECT pg_reload_conf()`, 'postgres');
    return f('ca.pem');
  }

  async createDb(name = 'ampere'): Promise<void> {
    await this.psql(`CREATE DATABASE ${name}`, 'postgres');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.stopServer();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
