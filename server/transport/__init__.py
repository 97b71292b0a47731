"""How peers reach the hub: the WebSocket endpoint masters and daemons speak the protocol on (``ws``), and the REST
API with its live streams (``rest``). Transport only: what a request does is the features' business."""
