"""Commands shared by the API, the worker, the CLI and the bench: one function each.

A command takes an open :class:`shared.service.uow.UnitOfWork` and never commits; the
entry point (request, task, CLI command) opens the unit of work, which commits and then
sends the messages the command queued."""
