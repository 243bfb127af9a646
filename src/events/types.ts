import type { Family } from '../net/ip';

/** A security event as the rest of Ampere sees it: no AMI text, only parsed, bounded values. */
export interface SecurityEvent {
  kind: string; // Event header: ChallengeResponseFailed, InvalidAccountID, SuccessfulAuth, ...
  severity: 'Error' | 'Informational';
  service: string; // PJSIP, AMI, SIP, ...
  address: string; // canonical IP (src/net/ip.ts), the only field that may reach the firewall
  family: Family;
  transport: string | null; // UDP, TCP, TLS, WS, WSS, or null when Asterisk leaves it out
  port: number | null;
  account: string; // hostile text from the network: sanitised and cut, only ever stored or logged
  sessionId: string;
}

export type ParseResult =
  | { ok: true; event: SecurityEvent }
  | { ok: false; ignored: true; reason: string } // not a security event: nothing to say
  | { ok: false; ignored: false; reason: string }; // a security event we could not read: log at debug
