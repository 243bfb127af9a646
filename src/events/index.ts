export type { SecurityEvent, ParseResult } from './types';
export { toSecurityEvent, parseRemoteAddress, sanitizeAccount, KNOWN_SEVERITY } from './parse';
