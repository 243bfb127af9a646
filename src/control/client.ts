import { request } from 'node:http';

/** Why the daemon could not be asked. `not-running`: nothing listens on the socket. */
export class ControlUnreachable extends Error {
  constructor(
    message: string,
    readonly reason: 'not-running' | 'denied' | 'timeout' | 'protocol',
  ) {
    super(message);
    this.name = 'ControlUnreachable';
  }
}

export interface ControlResponse<T = unknown> {
  status: number;
  body: T;
}

/**
 * One JSON request to the daemon's control socket (HTTP over a Unix socket).
 * Resolves with any HTTP status (the caller reads `status`); rejects with ControlUnreachable
 * when the daemon cannot be reached or does not answer in time.
 */
export function controlRequest<T = Record<string, unknown>>(
  socketPath: string,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
  timeoutMs = 30_000,
): Promise<ControlResponse<T>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request(
      {
        socketPath, method, path,
        headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : {}) as T });
          } catch {
            reject(new ControlUnreachable(`the daemon answered ${method} ${path} with something that is not JSON`, 'protocol'));
          }
        });
        res.on('error', (err) => { clearTimeout(timer); reject(new ControlUnreachable(`control socket: ${err.message}`, 'protocol')); });
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      reject(new ControlUnreachable(`the daemon did not answer ${method} ${path} within ${timeoutMs / 1000} s (control socket ${socketPath})`, 'timeout'));
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTSOCK' || err.code === 'ENOTDIR') {
        reject(new ControlUnreachable(`the daemon is not running (nothing listens on ${socketPath})`, 'not-running'));
      } else if (err.code === 'EACCES' || err.code === 'EPERM') {
        reject(new ControlUnreachable(`permission denied on ${socketPath}: only root or the daemon's user may control Ampere`, 'denied'));
      } else {
        reject(new ControlUnreachable(`control socket ${socketPath}: ${err.message}`, 'protocol'));
      }
    });
    req.end(payload);
  });
}
