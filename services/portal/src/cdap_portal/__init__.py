"""CDAP portal: the web pages partners, CAF approvers and auditors use (server-rendered, no data of its own)."""
