"""The rules of the seeds, one unit test each, and the proof each lives in one place."""
