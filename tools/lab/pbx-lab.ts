/**
 * A daemon's world for tests: a "pbx" namespace holding the daemon, the AMI stand-in and a UDP
 * sink on Asterisk's port, an attacker namespace joined to it by a veth pair, and a temporary
 * directory for the database; destroy() ends the daemons started here and removes it all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeAmiProcess } from './ami-proc';
import { DaemonProcess } from './daemon';
import { addAttacker, Netns, UdpSink, type Attacker } from './netns';

export class PbxLab {
  /** The daemons started here, oldest first. */
  readonly daemons: DaemonProcess[] = [];

  private constructor(
    readonly pbx: Netns,
    readonly atk: Attacker,
    readonly sink: UdpSink,
    readonly ami: FakeAmiProcess,
    readonly dir: string,
  ) {}

  static async create(tag: string): Promise<PbxLab> {
    const pbx = await Netns.create();
    let atk: Attacker | undefined;
    let ami: FakeAmiProcess | undefined;
    try {
      atk = await addAttacker(pbx);
      const sink = await UdpSink.start(pbx);
      ami = await FakeAmiProcess.start(pbx.name);
      return new PbxLab(pbx, atk, sink, ami, mkdtempSync(join(tmpdir(), `ampere-${tag}-`)));
    } catch (err) {
      await ami?.stop();
      await atk?.ns.destroy();
      await pbx.destroy();
      throw err;
    }
  }

  get db(): string {
    return join(this.dir, 'ampere.db');
  }

  /** The environment of a daemon in this lab: its AMI stand-in, its database, the given backend. */
  env(backend: string, extra: Record<string, string> = {}): Record<string, string> {
    return { AMPERE_PORT: String(this.ami.port), AMPERE_DB: this.db, AMPERE_BACKEND: backend, AMPERE_AMI_TIMEOUT: '1s', ...extra };
  }

  /** A daemon inside the pbx namespace, stopped by destroy(). */
  daemon(env: Record<string, string>): DaemonProcess {
    const d = new DaemonProcess(env, { netns: this.pbx.name });
    this.daemons.push(d);
    return d;
  }

  async destroy(): Promise<void> {
    await Promise.all(this.daemons.map((d) => d.stop('SIGKILL')));
    await this.ami.stop();
    await this.atk.ns.destroy();
    await this.pbx.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
