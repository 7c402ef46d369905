"""Data: the types every source returns (:mod:`.types`), one dispatch table of sources
(:mod:`.sources`: MNIST-style IDX files, image folders, CSV files), batching (:mod:`.batches`),
image decoding with its one suffix list (:mod:`.images`), the decode cache and ``data inspect``.

Importing this package imports no torch; :mod:`.detect` (what ``--data PATH`` names) stays light too.
"""
