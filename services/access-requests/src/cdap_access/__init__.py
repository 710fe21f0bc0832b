"""CDAP access requests: the multi-stage approval of habilitations by departmental CAFs."""
