"""The runtime all three services share: configuration, server, access policy, audit, load."""
