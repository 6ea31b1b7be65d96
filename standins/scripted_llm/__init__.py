"""scripted_llm: an OpenAI-compatible chat-completions server that the tests control.

The real ``opencode serve`` needs a model to talk to; this is one, on loopback, with
no network. It gives THE SAME answers as :mod:`standins.oc_compat` for the same
prompt and working tree (it reuses that package's answer builders and directive
parser), so one conformance suite can run against both servers and any shape where
ours differs from the real daemon's fails a test.

``POST /v1/chat/completions`` (``stream: true``) answers as server-sent events: a
role chunk, content or ``delta.tool_calls`` chunks, a ``finish_reason`` chunk, a usage
chunk (``choices: []``) and ``data: [DONE]``. When the request offers the
``StructuredOutput`` tool, the answer is a call of it built from the tool's
``parameters`` schema. Directives in the user's text script failures:

* ``[oc:invalid]`` / ``[oc:invalid-attempts=K]``: off-schema arguments.
* ``[oc:no-structured]``: plain text, ``finish_reason: stop`` (the daemon then reports
  ``StructuredOutputError``).
* ``[oc:tool=NAME]``: call NAME first with plausible arguments; after its result comes
  back, answer normally. ``[oc:tool=NAME@PATH]`` aims a write, edit, read or list at
  PATH (relative to the working directory, ``..`` kept, or absolute).
* ``[oc:slow=MS]``: keep the stream open MS ms before answering.
* ``[oc:spend=N]``: first call ``read`` and report N prompt tokens for that request
  (the daemon bills it as the turn's first step); ``[oc:slow]`` then holds the next.
* ``[oc:llm500]``: HTTP 500 on every request (the daemon retries with backoff).
* ``[oc:api-error]``: HTTP 400 (the daemon reports ``APIError``, not retryable);
  ``[oc:api-error=retryable]``: HTTP 503.

``POST /v1/messages`` speaks the Anthropic Messages API instead (see
:mod:`standins.scripted_llm.anthropic`): the same script, so the daemon's anthropic
provider gets the same answers, tool calls, tokens and cost.

Started with an ``api_key``, the server refuses (401) a request that does not carry it
(``Authorization: Bearer`` or ``x-api-key``): proof that a key the daemon reads from
its environment arrives.

``GET /__kodo/stats`` counts the model requests (by reply kind and by wire), sums the
usage it reported and the bytes of the request bodies it was sent, and counts refused
keys; ``POST /__kodo/reset`` zeroes them. The usage reads only the last user text (as
the compat server's does): a history the daemon re-sends shows in ``request_bytes``,
never in the tokens.
"""

from standins.scripted_llm.server import ScriptedLLM, running_llm

__all__ = ["ScriptedLLM", "running_llm"]
