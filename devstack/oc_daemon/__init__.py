"""oc_daemon: the real OpenCode daemon (``opencode serve`` 1.18.33), installed and run by kodo.

* :mod:`~devstack.oc_daemon.install` puts the npm package ``opencode-ai`` in a cache
  directory (never in the repository) and finds its platform binary.
* :mod:`~devstack.oc_daemon.config` writes the global config: one provider ``kodo``
  (an OpenAI-compatible LLM), deny-by-default permissions, nothing that phones home.
* :mod:`~devstack.oc_daemon.daemon` starts it isolated (own HOME, every
  ``OPENCODE_DISABLE_*`` switch on, project configs ignored, basic auth, loopback),
  waits for ``/global/health`` and stops it (SIGTERM, then SIGKILL after a grace).
* :mod:`~devstack.oc_daemon.cli` is ``kodo oc install|up|down|health``.
"""
