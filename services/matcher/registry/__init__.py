"""The counselor registry and the encrypted people directory."""
