"""oc_compat: an OpenCode-compatible HTTP server with a deterministic scripted model.

OpenCode cannot reach a model on a machine without one, so demos and tests talk to
this instead. It answers the daemon's endpoints with the daemon's JSON shapes
(OpenCode 1.18.33): ``GET /global/health``, ``POST /session``, ``GET /session/{id}``,
``GET /session/{id}/children``, ``POST /session/{id}/message``,
``POST /session/{id}/prompt_async`` (204 at once, the turn plays on its own),
``GET /session/{id}/message``, ``POST /session/{id}/abort``, ``GET /session/status``,
``GET /event`` and ``GET /global/event`` (the daemon's SSE framing and event order,
see events.py); plus ``GET /__kodo/stats`` and
``POST /__kodo/reset``, which the real daemon lacks, so tests can count calls at the server
(``by_title`` counts prompts per session title: kodo titles one session per op_key;
``in_flight_total`` is the prompts held now, ``in_flight_peak`` the most held at once
since the last reset).

``kodo oc-compat`` serves it as a process on gevent (green.py): held prompts, async
turns and event streams are greenlets, thousands at once on one OS thread;
:func:`running_server` serves it inside a test process on cheroot's threads (server.py).

Answers depend only on the seed, the prompt and the directory's working tree. With
``format.type == "json_schema"`` the schema picks the script: a ``design`` property
gets a PlanOutput, ``summary`` and ``files`` alone an EditReport (the build agent first
edits the directory as planned between ``--- plan.json ---`` and ``--- end plan.json ---``
lines, reporting each edit as a tool part; see edits.py), ``argv`` a BuildOutput,
anything else a minimal instance of the schema. Without a format the answer is a text
part. Parts carry no ``snapshot`` (kodo's daemon config turns snapshots off).

Directives in the prompt text script failures:

* ``[oc:invalid]``: the structured answer violates the schema (still ``valid: true``).
* ``[oc:invalid-attempts=K]``: invalid while the line ``kodo-attempt: N`` has N <= K
  (no such line means N = 1).
* ``[oc:no-structured]``: prose instead of the tool call, ``StructuredOutputError``.
* ``[oc:api-error]``: ``APIError`` statusCode 400, isRetryable false, nothing billed;
  ``[oc:api-error=retryable]``: statusCode 503, isRetryable true.
* ``[oc:slow=MS]``: wait MS ms first; ``/abort`` ends the wait with
  ``MessageAbortedError``.
* ``[oc:abort-fails=N]``: the session's next N ``/abort`` requests answer HTTP 500
  ``UnknownError`` and stop nothing (a daemon too busy, or half broken, to abort).
* ``[oc:delete-fails=N]``: the session's next N ``DELETE /session/{id}`` requests answer
  HTTP 500 ``UnknownError`` and keep it (a daemon restarting, or half broken).
* ``[oc:slow-edit=MS]``: on attempt 1 the build agent pauses MS ms between the files it
  edits; ``/abort`` ends the pause (the files edited so far stay edited): a half-edited
  worktree, as a daemon leaves it when its caller died mid-edit.
* ``[oc:http500]``: HTTP 500 ``UnknownError`` with the daemon's exact message, the answer
  it gives an internal failure (and an unknown agent or model; ``GET /agent`` and
  ``GET /config/providers`` tell them apart).
* ``[oc:http500-attempts=K]``: that HTTP 500 while ``kodo-attempt: N`` has N <= K.
* ``[oc:garbage]``: HTTP 200 whose body is not JSON (as from a broken proxy).
* ``[oc:llm500]``: the model answers HTTP 500 and the daemon retries with backoff: the
  prompt blocks, ``GET /session/status`` says ``retry``, until ``/abort``.
* ``[oc:fail-verify]``: BuildOutput argv that prints "verification failed", exits 3.
* ``[oc:child]``: the turn spawns a child session (``GET /session/{id}/children``).
* ``[oc:tool=NAME]``: also a completed ``tool`` part for NAME (repeatable);
  ``[oc:tool=NAME@PATH]``: a write/edit/read part whose input names PATH.
* ``[oc:fixture=NAME]``: the plan, patch or build answer comes verbatim from ``NAME.json``
  in the fixtures folder (``--fixtures-dir`` / ``OC_COMPAT_FIXTURES_DIR``), keyed
  ``plan``/``patch``/``build``; a kind the file lacks is answered as usual. A bad name
  or file is an HTTP 500 naming the problem (see fixtures.py).
* ``[oc:huge=N]``: the structured answer's first string field (a plan's ``design``)
  grows to N characters: an oversize, off-schema answer.
* ``[oc:spend=N]``: the turn's first step reads a file for N input tokens (an earlier
  assistant message, billed, its ``message.updated`` sent at once), before any
  ``[oc:slow]`` hold: a turn that spends past kodo's call token bound while it runs.
* ``[oc:loop-top-abort]``: with ``[oc:spend]``, an abort during the hold ends the turn
  as OpenCode's loop does when it breaks at its top: no new message and no error, the
  newest message the completed spend step.
"""

from standins.oc_compat.app import CompatConfig, CompatState, create_app
from standins.oc_compat.server import CompatServer, running_server

__all__ = ["CompatConfig", "CompatServer", "CompatState", "create_app", "running_server"]
