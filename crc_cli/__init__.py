"""What every crc command line shares: the joint ``crc`` entry point (``main``: the master's commands and the hub's)
and the log line formats (``logformat``). It may import ``server`` and ``clients``, which never import each other."""
