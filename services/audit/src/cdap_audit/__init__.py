"""CDAP audit: tamper-evident Merkle log of every event, queries, alerts."""
