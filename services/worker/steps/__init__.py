"""The steps: the only IO seams of a run (OpenCode, git, subprocess, artifacts)."""
