"""Feed kinds, one module per vendor protocol: frame in, records out. Pure: no I/O, no clock.

The contract a feed kind meets is `contract.Feed`; `registry.FEEDS` lists every kind, and is the
only list of vendors in the package. docs/adding-a-feed.md walks through adding one.
"""
