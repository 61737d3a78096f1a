"""Authentication, authorization, rate limits, TLS and the audit log (see the README's Security section)."""
