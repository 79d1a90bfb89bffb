"""The web layer's database: operator accounts, login sessions, API tokens and residents' record links,
in their own SQLite file or in the PostgreSQL store. One component for migrations ("accounts"): a
SQLite file holds one schema version. Whichever store opens the database first brings it up to date."""
from __future__ import annotations

from gateway.db import Migration

ACCOUNTS = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, created_ms INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, throttled_until_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES accounts(username), csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL, revoked_ms INTEGER);
"""
RECORD_LINKS = """
CREATE TABLE IF NOT EXISTS record_links (
    key_hash TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS record_links_by_resident ON record_links (resident_id);
"""
# Numbered steps, applied in order at start; a later change to the schema is a new step, never an edit.
MIGRATIONS = (Migration(1, lambda c: c.script(ACCOUNTS)), Migration(2, lambda c: c.script(RECORD_LINKS)))
