"""The hub's core: sessions, the event bus, delivery of queued orders, typed dispatch. Imports no feature."""
