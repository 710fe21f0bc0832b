"""CDAP dossiers: profile-filtered lookups of family-benefit files, recorded before any data leaves.

`domain.py` decides (pure), `lookups.py` and `searches.py` are the use cases (one transaction each),
`routes_dossiers.py` is the HTTP edge, `handlers.py` keeps the read model from Kafka, `app.py` wires them.
"""
