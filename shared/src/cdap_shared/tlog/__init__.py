"""Verifying CDAP's tamper-evident audit log from outside: RFC 9162 Merkle proofs (`merkle`), C2SP signed
checkpoints (`checkpoint`), a served entry against its hashed bytes (`verify`).

One implementation, used by the audit service that builds the log, the portal that shows proofs to an
auditor, and the CLI (`cdap audit verify`, `cdap demo`).
"""
