"""The hub's features, each a ``server.core.feature.Feature``: its handlers, peer messages, hooks and routes.
A feature imports the core, the store, the protocol, and other features' service functions only."""
