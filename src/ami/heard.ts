/** How long after a login a security event must have arrived: Asterisk sends the login's own SuccessfulAuth at once. */
export const SECURITY_EVENT_GRACE_MS = 5_000;

/**
 * Whether the AMI user can read security events at all. Asterisk answers every login with a
 * SuccessfulAuth (Service AMI) for that very login, delivered only to users with
 * `read = security`: silence past the grace means Ampere is blind, however healthy it looks.
 */
export class SecurityHearing {
  private loginAt: number | null = null;
  private heardAt: number | null = null;

  /** A login was accepted (each reconnect starts the wait again). */
  loggedIn(at: number): void {
    this.loginAt = at;
    this.heardAt = null;
  }

  /** A security event (readable or not) arrived. */
  heard(at: number): void {
    if (this.heardAt === null) this.heardAt = at;
  }

  get lastLoginAt(): number | null { return this.loginAt; }
  get firstHeardAt(): number | null { return this.heardAt; }

  /** The health problem, or null: none while not logged in, nor within the grace. */
  problem(now: number, user: string, connected: boolean): string | null {
    if (!connected || this.loginAt === null || this.heardAt !== null || now - this.loginAt < SECURITY_EVENT_GRACE_MS) return null;
    return `no security event heard since the AMI login ${Math.round((now - this.loginAt) / 1000)} s ago: give the AMI user "${user}" "read = security" in manager.conf`;
  }
}
