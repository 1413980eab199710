"""Feed adapters, one module per vendor protocol: frame in, records out. Pure: no I/O, no clock."""
