"""The connection runtime shared by every feed: transports, backoff, watchdog, resume (`service.collect`)."""
