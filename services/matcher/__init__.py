"""The matcher service: counselor registry, online booking, optimized matching."""
