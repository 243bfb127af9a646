/**
 * A minimal reader for raw AMI bytes of trusted origin: used by tests, fixtures replay and
 * benchmarks, never by the daemon (that is src/ami/reader.ts, built for hostile bytes). Keys
 * are lower-cased as there, so both feed toSecurityEvent() the same shape.
 */
export function parseAmiBlock(block: string): Record<string, string> {
  const fields = Object.create(null) as Record<string, string>;
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields[line.slice(0, colon).toLowerCase().replace(/-/g, '_')] = line.slice(colon + 1).trim();
  }
  return fields;
}

/** Split a stream into messages (banner line dropped); the part after the last blank line is returned as rest. */
export function splitAmiStream(text: string): { messages: string[]; rest: string } {
  let body = text;
  if (body.startsWith('Asterisk Call Manager/')) body = body.slice(body.indexOf('\r\n') + 2);
  const parts = body.split('\r\n\r\n');
  const rest = parts.pop() ?? '';
  return { messages: parts.filter((p) => p.length > 0), rest };
}
