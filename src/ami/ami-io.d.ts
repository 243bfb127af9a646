// ami-io ships no types; only what src/ami/connection.ts uses is declared.
declare module 'ami-io/lib/index.js' {
  import type { EventEmitter } from 'node:events';
  import type { Socket } from 'node:net';
  interface AmiLogger {
    trace(...a: unknown[]): void; debug(...a: unknown[]): void; info(...a: unknown[]): void;
    warn(...a: unknown[]): void; error(...a: unknown[]): void; fatal(...a: unknown[]): void;
  }
  interface ClientConfig { host: string; port: number; login: string; password: string; encoding?: string; logger: AmiLogger }
  class Client extends EventEmitter {
    socket: Socket | undefined;
    tailInput: string;
    connected: boolean;
    connect(shouldReconnect?: boolean, reconnectTimeout?: number): void;
    disconnect(): void;
    send(action: object, cb: (err: unknown, res?: unknown) => void): void;
    splitMessages(data: string): void;
    /** Pending actions by ActionID: the only responses handed back to ami-io. */
    callbacks: Record<string, unknown>;
    parseMessage(raw: string): void;
  }
  export function createClient(config: ClientConfig): Client;
  export const Action: { Ping: new () => { ActionID: string | number } };
  export type { Client };
}
