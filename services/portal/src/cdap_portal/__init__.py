"""CDAP portal: the web pages partners, CAF approvers and auditors use.

Server-rendered (Jinja2, htmx where it helps), it owns no data: it shows what the services' APIs answer.
"""
