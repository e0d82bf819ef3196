"""The CXML endpoint: the voice application Cloudonix calls when a number rings.

Data flows one way: request parameters -> ``routing`` (pure: which route, which
verbs) -> ``render`` (verbs -> XML bytes). ``health`` keeps a cached view of
LiveKit SIP and the agents; ``app`` is the ASGI adapter. The commands are
``trunkline.cli.cxml``.
"""
