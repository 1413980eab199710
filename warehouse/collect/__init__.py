"""The connection runtime shared by every feed: transports, backoff, heartbeat, resume."""
