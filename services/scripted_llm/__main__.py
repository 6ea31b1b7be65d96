"""``python -m services.scripted_llm --port P``: serve until SIGTERM (used by ``kodo oc up``)."""

from services.scripted_llm.server import main

main()
