"""Data: the types every source returns (:mod:`.types`), one record per data source (:mod:`.sources`:
the registered MNIST-style IDX datasets, image folders, CSV files), batching (:mod:`.batches`),
image decoding with its one suffix list (:mod:`.images`), the decode cache and ``data inspect``.

The data room is the only one that knows sources by name. Importing this package imports no torch;
neither do :mod:`.sources` (the table) and :mod:`.detect` (what ``--data PATH`` names).
"""
