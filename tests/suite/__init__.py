"""The suite as a whole: the CLI, fuzzing, chaos, metrics, monitoring, manifests and image."""
