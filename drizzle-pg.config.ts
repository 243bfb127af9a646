import { defineConfig } from 'drizzle-kit';

/** Fleet mode's PostgreSQL schema (src/fleet/schema.ts): its migrations live apart from SQLite's drizzle/. */
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/fleet/schema.ts',
  out: './drizzle-pg',
});
