import { defineConfig } from 'drizzle-kit'

// `npm run db:generate` writes a migration for every change to the schema below
// (migrations/README.md). No credentials here: generating needs no database.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/storage/schema.ts',
  out: './migrations',
})
