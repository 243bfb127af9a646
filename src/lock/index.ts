import { mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';

/** Another daemon holds the database or the chain: the start must stop, saying which. */
export class LockError extends Error {}

/** Who holds a chain, as its holder answers (claimed) and as the kernel knows it (pid). */
export interface ChainHolder { pid: number | null; claimedPid: number | null; db: string | null }

/** What a daemon holds for its whole life; released by the kernel if it dies. */
export interface DaemonLocks {
  readonly dbLock: string | null;
  readonly chainLock: string | null;
  release(): Promise<void>;
}

export const dbLockPath = (db: string) => `${resolve(db)}.lock`;
/** An abstract Unix socket name: per network namespace, which is exactly where a chain lives. */
export const chainLockName = (chain: string) => `\0ampere-chain-${chain}`;

/**
 * One daemon per database: an fcntl lock held through SQLite (a dedicated connection on
 * `<db>.lock` in EXCLUSIVE locking mode), which the kernel drops when the process dies, so a
 * SIGKILLed daemon never leaves a stale lock behind.
 */
export function lockDatabase(db: string): Database.Database | null {
  if (db === ':memory:' || db === '') return null;
  const path = dbLockPath(db);
  mkdirSync(dirname(path), { recursive: true });
  const c = new Database(path);
  try {
    c.pragma('busy_timeout = 0');
    c.pragma('locking_mode = EXCLUSIVE');
    c.exec('BEGIN EXCLUSIVE; COMMIT');
    return c;
  } catch (err) {
    c.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new LockError(`another Ampere daemon is running on this database (${resolve(db)}: its lock ${path} is held)`);
    }
    throw new Error(`database lock ${path}: ${(err as Error).message}`);
  }
}

/**
 * One daemon per chain in a network namespace: a listening abstract Unix socket, whose name
 * the kernel frees when the process dies. It answers a connect with the holder's pid and
 * database, so a second daemon can say who it is (abstract names have no permissions: the
 * pid the kernel shows for the socket is reported beside what the holder claims).
 */
export async function lockChain(chain: string, info: { pid: number; db: string }): Promise<Server> {
  const name = chainLockName(chain);
  const server = createServer((s) => { s.on('error', () => {}); s.end(JSON.stringify(info)); });
  try {
    await new Promise<void>((ok, fail) => { server.once('error', fail); server.listen(name, () => { server.off('error', fail); ok(); }); });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw new Error(`chain lock for ${chain}: ${(err as Error).message}`);
    const h = await chainHolder(chain);
    const who = h.pid !== null ? `pid ${h.pid}` : h.claimedPid !== null ? `pid ${h.claimedPid}` : 'an unknown process';
    const spoof = h.pid !== null && h.claimedPid !== null && h.pid !== h.claimedPid ? ` (it claims pid ${h.claimedPid})` : '';
    throw new LockError(`chain ${chain} is held by another Ampere daemon in this network namespace: ${who}${spoof}, database ${h.db ?? 'unknown'}; ` +
      'one daemon per chain: stop it, or give this one another chain');
  }
  server.on('error', () => {});
  server.unref();
  return server;
}

/** Ask the holder of a chain lock who it is, and find its pid in /proc. */
export async function chainHolder(chain: string): Promise<ChainHolder> {
  const name = chainLockName(chain);
  const claim = await new Promise<{ pid?: unknown; db?: unknown }>((ok) => {
    let text = '';
    const s = connect(name);
    const done = () => { clearTimeout(t); s.destroy(); try { ok(JSON.parse(text) as object); } catch { ok({}); } };
    const t = setTimeout(done, 2000);
    s.setEncoding('utf8');
    s.on('data', (d: string) => { text += d; if (text.length > 8192) done(); });
    s.on('end', done);
    s.on('error', done);
  });
  return {
    pid: socketOwner(name),
    claimedPid: Number.isSafeInteger(claim.pid) ? (claim.pid as number) : null,
    db: typeof claim.db === 'string' ? claim.db.replace(/[\p{Cc}\p{Cf}]/gu, '?').slice(0, 300) : null,
  };
}

/** The pid of the process listening on an abstract socket, from /proc (null when not found). */
function socketOwner(name: string): number | null {
  try {
    const want = `@${name.slice(1)}`;
    let inode: string | undefined;
    for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      // Listening; Node pads an abstract name with NULs to the full length, shown as '@'.
      if (f.length >= 8 && f[3] === '00010000' && (f[7] === want || f[7].replace(/@+$/, '') === want)) { inode = f[6]; break; }
    }
    if (!inode) return null;
    const target = `socket:[${inode}]`;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let fds: string[];
      try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
      for (const fd of fds) {
        try { if (readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return Number(pid); } catch { /* gone */ }
      }
    }
  } catch { /* no /proc */ }
  return null;
}

/**
 * Both locks, before the daemon touches anything else: the database's, then (unless the
 * backend changes nothing in the kernel) the chain's. A refusal throws LockError.
 */
export async function takeDaemonLocks(db: string, chain: string | null): Promise<DaemonLocks> {
  const dbConn = lockDatabase(db);
  let server: Server | null = null;
  try {
    if (chain !== null) server = await lockChain(chain, { pid: process.pid, db: resolve(db) });
  } catch (err) {
    dbConn?.close();
    throw err;
  }
  return {
    dbLock: dbConn ? dbLockPath(db) : null,
    chainLock: chain,
    release: async () => {
      if (server) { const s = server; await new Promise<void>((ok) => s.close(() => ok())); }
      dbConn?.close();
    },
  };
}
