"""``python -m standins.scripted_llm --port P``: serve until SIGTERM (used by ``kodo oc up``)."""

from standins.scripted_llm.server import main

main()
