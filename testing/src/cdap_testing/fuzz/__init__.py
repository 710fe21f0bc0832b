"""Hypothesis strategies for hostile Kafka records, and a stand-in broker that catches dead letters.

Every CDAP consumer must survive whatever lands on its topics: a record that is not an event, or
an event whose payload does not fit its type's model, goes to `<topic>.dlq` and consumption goes on.
The strategies here draw such records (as the raw bytes a producer would have written); service
tests combine them with valid events of the types they consume. Test-only code, in the dev-only
`cdap_testing` package.

Two families, because they must be judged differently:

- *malformed* records (`malformed_records`, `bad_payloads`): the envelope or the payload violates
  the contract. The consumer must dead-letter them without ever calling the service's handler.
- *awkward* payloads (`awkward_payloads`): valid per the model but hostile to what stores them
  (NUL characters PostgreSQL refuses, 100,000-character strings, 64-bit overflowing integers,
  extreme dates). A service may apply them or dead-letter them, but must not stall on them.
"""

from cdap_testing.fuzz.running import *  # noqa: F403
from cdap_testing.fuzz.strategies import *  # noqa: F403
