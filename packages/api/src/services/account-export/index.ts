// Account export: one streamed JSON document of everything the service holds about a user,
// made of the tables each owning service registers (`register`), read a page at a time.
export { createAccountExport, type AccountExport } from './service.ts'
export { keysetPages, pagesById, pagesPerParent, REDACTED, redactColumns, singlePage, type ExportTables } from './pages.ts'
