import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Logger } from '../log';

/** A refusal with an HTTP status: 400 bad input, 404 unknown, 409 refused by policy. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ControlRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: Record<string, unknown>;
}

/** An answer: body as JSON, or json, its text already made (a listing page rendered by SQLite). */
export interface ControlAnswer { status?: number; body: unknown; json?: string }

export type ControlHandler = (req: ControlRequest) => Promise<ControlAnswer>;

/** Longest path a Unix socket may have on Linux (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;
/** The largest request body: a legacy import's chunk is far below it (the CLI splits larger imports). */
export const MAX_BODY = 4 * 1024 * 1024;

/**
 * Before the daemon touches the kernel: is another daemon already answering on this socket
 * (same database)? Then refuse to start. A stale socket file (nothing listens) is removed.
 */
export async function claimSocket(path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) return; // no socket possible there: listen() says why
  let st;
  try { st = lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket: remove it (Ampere keeps its control socket there)`);
  const answering = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
  if (answering) throw new Error(`another Ampere daemon is running on this database (its control socket ${path} answers)`);
  unlinkSync(path);
}

/**
 * The control endpoint: HTTP with JSON bodies over a Unix socket, mode 0600 (only root and the
 * daemon's user may connect). Created under a 0177 umask so it is never reachable more widely,
 * even for a moment.
 */
export class ControlServer {
  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async listen(path: string, handler: ControlHandler, log: Logger): Promise<ControlServer> {
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
      throw new Error(`control socket path ${path} is longer than ${MAX_SOCKET_PATH} bytes: put the database in a shorter directory`);
    }
    const server = createServer((req, res) => void serve(req, res, handler, log));
    server.keepAliveTimeout = 1000;
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => { server.off('error', reject); resolve(); });
      });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    server.on('error', (err) => log.error({ err: String(err) }, 'control socket error'));
    return new ControlServer(path, server);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    try { unlinkSync(this.path); } catch { /* already gone */ }
  }
}

async function serve(req: IncomingMessage, res: ServerResponse, handler: ControlHandler, log: Logger): Promise<void> {
  const send = (status: number, body: unknown, json?: string) => {
    if (res.headersSent) return;
    const text = (json ?? JSON.stringify(body)) + '\n';
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  };
  try {
    const url = new URL(req.url ?? '/', 'http://ampere');
    const chunks: Buffer[] = [];
    let size = 0;
    if (Number(req.headers['content-length']) > MAX_BODY) throw new HttpError(413, `request body larger than ${MAX_BODY} bytes`);
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) throw new HttpError(413, `request body larger than ${MAX_BODY} bytes`);
      chunks.push(c as Buffer);
    }
    let body: Record<string, unknown> = {};
    if (size > 0) {
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { throw new HttpError(400, 'request body is not JSON'); }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'request body must be a JSON object');
    }
    const out = await handler({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, body });
    send(out.status ?? 200, out.body, out.json);
  } catch (err) {
    if (err instanceof HttpError) {
      // The rest of an oversized body is never read: the connection ends with the answer.
      if (err.status === 413) res.shouldKeepAlive = false;
      return send(err.status, { error: err.message });
    }
    log.error({ err: err instanceof Error ? err.stack : String(err), method: req.method, url: req.url }, 'control request failed');
    send(500, { error: err instanceof Error ? err.message : String(err) });
  }
}
