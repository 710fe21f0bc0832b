"""CDAP identity: organisations, accounts, login, tokens, habilitations."""
