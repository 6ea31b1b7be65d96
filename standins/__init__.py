"""Stand-ins for a model: an OpenCode-compatible server and a scripted OpenAI-compatible LLM.

Used by the demo, the tests and the bench; no deployed module imports them.
"""
