"""The one runtime every service shares: configuration, server, auth, errors, logs, metrics."""
