"""The one root of every error the AT Protocol layer raises.

Callers that only need "the network handed us something that does not follow the protocol"
catch `ProtocolError`; the specific classes (bad CID, bad CAR, bad signature, ...) live beside
the code that raises them. Most also derive from `ValueError`, as the input was wrong.
"""


class ProtocolError(Exception):
    """Input or a peer that does not follow the AT Protocol, or a protocol-level refusal."""
