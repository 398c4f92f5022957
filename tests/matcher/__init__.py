"""The matcher: registry, booking, its saga across replicas, optimization and match jobs."""
